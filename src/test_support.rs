//! Helpers shared by the binary crate's unit tests.

use std::net::SocketAddr;

/// A loopback address of this test process for listener `k`: 127.N.M.k, with N.M from the pid
/// (so parallel test processes do not share addresses), and a port the kernel just handed out.
pub(crate) fn loopback_addr(k: u8) -> SocketAddr {
    let pid = std::process::id();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        probe.local_addr().expect("its address").port()
    };
    SocketAddr::from(([127, (pid >> 8) as u8 | 1, pid as u8, k], port))
}
