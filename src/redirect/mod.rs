//! HTTP redirect (issue 15): an HTTP/1.1 listener answering each request with a redirect to a
//! backend chosen by the xvs schedulers over health-checked backends.

pub mod decide;
pub mod server;
