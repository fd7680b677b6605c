//! The control plane: ipvsadm-compatible management (`xvs ctl`), health checks, metrics.
//!
//! # File and runtime changes
//!
//! * The configuration file is the desired state at start and at every reload (SIGHUP or
//!   `xvs ctl reload`).
//! * `xvs ctl` commands (`-A -E -D -a -e -d -C --set -R`) change the *running* state at once:
//!   each command is one atomic publish. They are not written to the file.
//! * They are kept until the next reload, which re-reads the file and replaces them; `reload`
//!   says so (`runtime changes not in the file are discarded: N`, with the list).
//! * `xvs ctl -S` prints the running state in ipvsadm's rule format, and `xvs ctl -S --toml` as
//!   the file's `[timeouts]` / `[[service]]` sections (backends in add order, so a reload keeps
//!   IPVS list order), so an operator can keep what they changed: paste the sections into the
//!   file, or replay the rules with `xvs ctl -R` after a reload.
//!
//! Modules: [`state`] (the desired state, ipvsadm's operations on it, and the typed
//! [`state::Change`]s between two states), [`ipvsadm`] (the command line and rule text in),
//! [`model`] (the listing the runtime fills), [`format`](mod@format) (ipvsadm's output and rule text out),
//! [`server`] (the Unix socket, the [`server::Director`] trait the runtime implements, and the
//! client). Imports point one way: `ipvsadm`, `format` and `model` use `state`; `state` uses
//! none of them.

pub mod adaptive;
pub mod format;
pub mod health;
pub mod ipvsadm;
pub mod metrics;
pub mod model;
pub mod quorum;
pub mod server;
pub mod state;

pub use model::{BackendListing, Listing, RateEstimator, Rates, ServiceListing, Stats};
pub use server::{Director, Limits, Request, Response, Server, DEFAULT_SOCKET};
pub use state::{DesiredState, StateError};
