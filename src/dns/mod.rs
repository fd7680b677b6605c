//! DNS load balancing (issue 15): an authoritative responder for configured names, answering
//! A/AAAA records chosen by the xvs schedulers over health-checked backends.

pub mod answer;
pub mod rrl;
pub mod server;
pub mod sites;
