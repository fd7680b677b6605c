//! Writes `examples/demo/capture.pcap`, the capture the README's `xvs replay` demo runs on:
//! `cargo run --example make_demo_capture`. The frames are built with the forwarding crate's
//! test packet builder; see `examples/demo/xvs.toml` for the topology.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use xvs::capture::CaptureWriter;
use xvs_forwarding::testkit::Pkt;

const GW: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const FRONT: [u8; 6] = [2, 0, 0, 0, 0, 1];
const BACK: [u8; 6] = [2, 0, 0, 0, 1, 1];

fn v4(d: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18 + c, 0, d))
}

fn main() -> anyhow::Result<()> {
    let vip = v4(100, 0);
    let client = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 5));
    let from_client = |src: IpAddr| Pkt::eth(GW, FRONT).ip_layer(src, vip).ttl(64);
    let from_backend = |n: u8, mac: u8, dst: IpAddr| {
        Pkt::eth([2, 0, 0, 0, 1, mac], BACK)
            .ip_layer(v4(n, 1), dst)
            .ttl(64)
    };
    let mut frames: Vec<Vec<u8>> = Vec::new();
    // Six HTTP connections to the wrr NAT service: 1:2:3 over .11/.12/.13.
    for i in 0..6u16 {
        frames.push(from_client(client).tcp(40000 + i, 80).syn().build());
    }
    // The first one completes its handshake and exchanges data through the director.
    frames.push(
        from_backend(13, 0x0d, client)
            .tcp(8080, 40000)
            .syn()
            .ack()
            .build(),
    );
    frames.push(
        from_client(client)
            .tcp(40000, 80)
            .ack()
            .payload(b"GET / HTTP/1.0\r\n\r\n")
            .build(),
    );
    frames.push(
        from_backend(13, 0x0d, client)
            .tcp(8080, 40000)
            .ack()
            .payload(b"HTTP/1.0 200 OK\r\n\r\nbackend 13\n")
            .build(),
    );
    // Direct routing and a tunnelled DNS query.
    frames.push(from_client(client).tcp(41000, 81).syn().build());
    frames.push(
        from_client(client)
            .udp(5353, 53)
            .payload(b"\x12\x34\x01\x00\x00\x01")
            .build(),
    );
    // FullNAT: SYN, and the backend's reply to the director's local address.
    frames.push(from_client(client).tcp(42000, 443).syn().build());
    frames.push(
        from_backend(11, 0x0b, v4(200, 1))
            .tcp(8443, 1024)
            .syn()
            .ack()
            .build(),
    );
    // IPv6 NAT.
    let c6: IpAddr = "2001:2:ff::5".parse()?;
    let vip6: IpAddr = "2001:2::100".parse()?;
    frames.push(
        Pkt::eth(GW, FRONT)
            .ip_layer(c6, vip6)
            .ttl(64)
            .tcp(43000, 80)
            .syn()
            .build(),
    );
    // Not for a service: ping to the VIP and SSH to the director go to the kernel.
    frames.push(from_client(client).icmp_echo(7, 1).build());
    frames.push(
        Pkt::eth(GW, FRONT)
            .ip_layer(client, v4(2, 0))
            .ttl(64)
            .tcp(44000, 22)
            .syn()
            .build(),
    );
    // A stray ACK for no connection, and a TTL about to expire: counted drops.
    frames.push(from_client(client).tcp(45000, 80).ack().build());
    frames.push(from_client(client).ttl(1).tcp(45001, 80).syn().build());

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/capture.pcap");
    let mut w = CaptureWriter::create(&path)?;
    for (i, f) in frames.iter().enumerate() {
        w.write(Duration::from_millis(1_764_000_000_000 + 10 * i as u64), f)?;
    }
    w.finish()?;
    println!("wrote {} frames to {}", frames.len(), path.display());
    Ok(())
}
