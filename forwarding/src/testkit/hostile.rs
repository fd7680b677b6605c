//! A corpus of ordinary, malformed and hostile frames with the outcome each must have, for
//! `xvs replay` (the `hostile_corpus` example writes it out; the `hostile_corpus` test of the
//! `xvs` crate replays it and checks every frame).
//!
//! The frames run in order through one pipeline configured by [`CONFIG`] (the topology of
//! `examples/demo`: VIPs 198.18.0.100 / .101 and 2001:2::100 / ::101 on port `front`,
//! backends 198.19.0.11.. / 2001:2:1::11 on port `back`, whose frames are tagged with VLAN
//! 200; `front` accepts VLAN 100). Early frames open the connections later ones (ICMP
//! errors) refer to. Every frame is at the same millisecond, so the ICMP rate limit is
//! exercised by its burst alone. Categories, layer by layer: L2 (destination MAC, broadcast,
//! multicast, VLAN ids, QinQ, non-IP), IPv4 / IPv6 headers (checksum, truncation, martian
//! and spoofed sources, LAND, options, extension header chains, TTL / hop limit 1, MTU),
//! transport (UDP checksum 0), trailers after the IP packet in every method, fragmentation of
//! too-big packets without DF, ICMP errors
//! (translated, bad checksum, short and broken quotes, about errors, redirects), no-backend
//! answers and the ICMP rate limit.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Ext, Pkt};
use crate::DropReason;

/// The configuration the corpus runs with (`xvs replay --config`).
pub const CONFIG: &str = r#"# Configuration of the hostile corpus (forwarding/src/testkit/hostile.rs).
[[interface]]
name = "front"
mac = "02:00:00:00:00:01"
ipv4 = "198.18.0.2"
ipv6 = "2001:2::2"
vlans = [100]

[[interface]]
name = "back"
mac = "02:00:00:00:01:01"
ipv4 = "198.19.0.1"
ipv6 = "2001:2:1::1"
vlans = [200]
egress_vlan = 200

[[route]]
dst = "0.0.0.0/0"
via = "198.18.0.1"
interface = "front"

[[route]]
dst = "198.19.0.0/24"
interface = "back"

[[route]]
dst = "::/0"
via = "2001:2::1"
interface = "front"

[[route]]
dst = "2001:2:1::/64"
interface = "back"

[[neighbour]]
address = "198.18.0.1"
mac = "02:00:00:00:00:fe"

[[neighbour]]
address = "2001:2::1"
mac = "02:00:00:00:00:fe"

[[neighbour]]
address = "198.19.0.11"
mac = "02:00:00:00:01:0b"

[[neighbour]]
address = "198.19.0.12"
mac = "02:00:00:00:01:0c"

[[neighbour]]
address = "198.19.0.13"
mac = "02:00:00:00:01:0d"

[[neighbour]]
address = "2001:2:1::11"
mac = "02:00:00:00:01:0b"

[fullnat]
local_addresses = ["198.19.0.200"]

[[service]]
protocol = "tcp"
vip = "198.18.0.100"
port = 80
scheduler = "rr"
[[service.backend]]
address = "198.19.0.11"
port = 8080
method = "nat"

[[service]]
protocol = "tcp"
vip = "198.18.0.100"
port = 81
scheduler = "rr"
[[service.backend]]
address = "198.19.0.12"
method = "dr"

[[service]]
protocol = "udp"
vip = "198.18.0.100"
port = 53
scheduler = "rr"
[[service.backend]]
address = "198.19.0.13"
method = "tun"

[[service]]
protocol = "tcp"
vip = "198.18.0.100"
port = 443
scheduler = "rr"
[[service.backend]]
address = "198.19.0.11"
port = 8443
method = "fullnat"

[[service]]
protocol = "tcp"
vip = "198.18.0.100"
port = 82
scheduler = "rr"
[[service.backend]]
address = "198.19.0.12"
weight = 0
method = "nat"

[[service]]
protocol = "tcp"
vip = "198.18.0.101"
port = 80
scheduler = "rr"
[[service.backend]]
address = "198.19.0.12"
port = 8080
method = "nat"

[[service]]
protocol = "tcp"
vip = "2001:2::100"
port = 80
scheduler = "rr"
[[service.backend]]
address = "2001:2:1::11"
port = 8080
method = "nat"

[[service]]
protocol = "udp"
vip = "2001:2::100"
port = 53
scheduler = "rr"
[[service.backend]]
address = "2001:2:1::11"
port = 5353
method = "nat"

[[service]]
protocol = "tcp"
vip = "2001:2::101"
port = 80
scheduler = "rr"
[[service.backend]]
address = "2001:2:1::11"
port = 8081
method = "nat"
"#;

/// What must become of a frame, in `xvs replay`'s words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Forwarded out of the named port.
    Tx(&'static str),
    /// Forwarded out of the named port as 1 + N IPv4 fragments.
    TxFragments(&'static str, usize),
    /// Handed to the kernel.
    Pass,
    /// Dropped for this reason.
    Drop(DropReason),
    /// Dropped for this reason, and an ICMP error about it sent out of the named port.
    Answer(DropReason, &'static str),
}

impl std::fmt::Display for Expect {
    /// The verdict column of `xvs replay`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Tx(p) => write!(f, "tx {p}"),
            Expect::TxFragments(p, n) => write!(f, "tx {p} +{n} fragments"),
            Expect::Pass => write!(f, "pass"),
            Expect::Drop(r) => write!(f, "drop {}", r.as_str()),
            Expect::Answer(r, p) => write!(f, "answer {} {p}", r.as_str()),
        }
    }
}

/// One frame of the corpus.
#[derive(Clone, Debug)]
pub struct Case {
    /// What the frame is (one line, for the manifest).
    pub name: String,
    pub frame: Vec<u8>,
    pub expect: Expect,
}

const GW: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const FRONT: [u8; 6] = [2, 0, 0, 0, 0, 1];
const BROADCAST: [u8; 6] = [0xff; 6];

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("IPv6 literal")
}

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 5);

/// The manifest: one line per frame, `index<TAB>expected verdict<TAB>name` (index from 1,
/// as `xvs replay` numbers frames).
pub fn manifest(cases: &[Case]) -> String {
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}\t{}\t{}\n", i + 1, c.expect, c.name))
        .collect()
}

/// The corpus, in replay order.
pub fn corpus() -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |name: &str, frame: Vec<u8>, expect: Expect| {
        out.push(Case {
            name: name.to_string(),
            frame,
            expect,
        })
    };
    use DropReason as R;
    use Expect::{Answer, Drop, Pass, Tx};
    let vip6 = v6("2001:2::100");
    let client6 = v6("2001:2:ff::5");
    let from_client = |src: Ipv4Addr| Pkt::eth(GW, FRONT).ipv4(src, VIP).ttl(64);
    let from_client6 = |src: Ipv6Addr| Pkt::eth(GW, FRONT).ipv6(src, vip6).ttl(64);
    let syn = |p: Pkt, sport: u16, dport: u16| p.tcp(sport, dport).syn().build();

    // --- L2 ---
    add(
        "NAT SYN (opens the connection the ICMP errors below refer to)",
        syn(from_client(CLIENT), 40000, 80),
        Tx("back"),
    );
    add(
        "destination MAC of another host",
        syn(
            Pkt::eth(GW, [2, 0, 0, 0, 0, 0x77]).ipv4(CLIENT, VIP),
            40001,
            80,
        ),
        Drop(R::OtherHost),
    );
    add(
        "L2 broadcast carrying a unicast IP destination",
        syn(Pkt::eth(GW, BROADCAST).ipv4(CLIENT, VIP), 40002, 80),
        Drop(R::L2Multicast),
    );
    add(
        "L2 multicast carrying a unicast IP destination",
        syn(
            Pkt::eth(GW, [1, 0, 0x5e, 0, 0, 0x64]).ipv4(CLIENT, VIP),
            40003,
            80,
        ),
        Drop(R::L2Multicast),
    );
    add(
        "VRRP to 224.0.0.18 (L2 and IP multicast: the kernel's)",
        Pkt::eth(GW, [1, 0, 0x5e, 0, 0, 18])
            .ipv4(v4(198, 18, 0, 3), v4(224, 0, 0, 18))
            .ttl(255)
            .proto(112)
            .payload(&[0x21, 1, 100, 1, 0, 1, 0, 0, 198, 18, 0, 100])
            .build(),
        Pass,
    );
    add(
        "ARP request (broadcast, not IP)",
        {
            let mut f = Pkt::eth(GW, BROADCAST).build();
            f.truncate(12);
            f.extend_from_slice(&[0x08, 0x06]);
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&GW);
            f.extend_from_slice(&[198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 198, 18, 0, 100]);
            f
        },
        Pass,
    );
    add(
        "VLAN 100 (configured on front)",
        syn(from_client(CLIENT).vlan(100), 40004, 80),
        Tx("back"),
    );
    add(
        "VLAN 300 (not configured)",
        syn(from_client(CLIENT).vlan(300), 40005, 80),
        Drop(R::VlanUnconfigured),
    );
    add(
        "VLAN 4095 (reserved)",
        syn(from_client(CLIENT).vlan(4095), 40006, 80),
        Drop(R::VlanReserved),
    );
    add(
        "priority tag (VLAN 0) is untagged",
        syn(from_client(CLIENT).vlan(0), 40007, 80),
        Tx("back"),
    );
    add(
        "QinQ 100 / 10 (stacked tags)",
        syn(from_client(CLIENT).vlan(100).vlan(10), 40008, 80),
        Drop(R::VlanStacked),
    );

    // --- IP headers ---
    add(
        "bad IPv4 header checksum",
        from_client(CLIENT)
            .bad_ip_checksum()
            .tcp(40010, 80)
            .syn()
            .build(),
        Drop(R::BadIpChecksum),
    );
    add(
        "frame cut inside the IPv4 header",
        syn(from_client(CLIENT), 40011, 80)[..30].to_vec(),
        Drop(R::Truncated),
    );
    for (name, src) in [
        ("martian source 0.0.0.1", v4(0, 0, 0, 1)),
        ("martian source 127.0.0.1", v4(127, 0, 0, 1)),
        ("martian source 224.1.2.3 (multicast)", v4(224, 1, 2, 3)),
        ("martian source 240.0.0.1 (reserved)", v4(240, 0, 0, 1)),
        ("martian source 255.255.255.255", v4(255, 255, 255, 255)),
    ] {
        add(
            name,
            syn(from_client(src), 40012, 80),
            Drop(R::MartianSource),
        );
    }
    add(
        "source is another VIP (spoofed)",
        syn(from_client(VIP2), 40013, 80),
        Drop(R::SourceIsVip),
    );
    add(
        "LAND: source = destination = VIP",
        syn(from_client(VIP), 80, 80),
        Drop(R::Land),
    );
    for (name, src, reason) in [
        ("IPv6 martian source ::", "::", R::MartianSource),
        ("IPv6 martian source ::1", "::1", R::MartianSource),
        ("IPv6 martian source ff02::1", "ff02::1", R::MartianSource),
        (
            "IPv6 martian source ::ffff:198.18.100.5 (v4-mapped)",
            "::ffff:198.18.100.5",
            R::MartianSource,
        ),
        ("IPv6 source is another VIP", "2001:2::101", R::SourceIsVip),
    ] {
        add(name, syn(from_client6(v6(src)), 40014, 80), Drop(reason));
    }
    // IPv4 options.
    for (name, opts, expect) in [
        (
            "IPv4 LSRR option",
            &[131u8, 7, 4, 198, 19, 0, 11][..],
            Drop(R::SourceRoute),
        ),
        (
            "IPv4 SSRR option",
            &[137, 7, 4, 198, 19, 0, 11][..],
            Drop(R::SourceRoute),
        ),
        (
            "IPv4 option length 0",
            &[7, 0, 4, 0][..],
            Drop(R::BadIpOptions),
        ),
        (
            "IPv4 option length 1",
            &[7, 1, 4, 0][..],
            Drop(R::BadIpOptions),
        ),
        (
            "IPv4 option overrunning the header",
            &[7, 11, 4, 0, 0, 0, 0, 0][..],
            Drop(R::BadIpOptions),
        ),
        (
            "IPv4 record route with pointer 3",
            &[7, 7, 3, 0, 0, 0, 0][..],
            Drop(R::BadIpOptions),
        ),
        (
            "IPv4 timestamp with pointer 4",
            &[68, 8, 4, 0, 0, 0, 0, 0][..],
            Drop(R::BadIpOptions),
        ),
        (
            "IPv4 LSRR with pointer 2 (malformed before source-routed)",
            &[131, 7, 2, 198, 19, 0, 11][..],
            Drop(R::BadIpOptions),
        ),
        ("IPv4 router alert (valid)", &[148, 4, 0, 0][..], Tx("back")),
        (
            "IPv4 NOP + record route (valid)",
            &[1, 7, 7, 4, 0, 0, 0, 0][..],
            Tx("back"),
        ),
    ] {
        add(
            name,
            from_client(CLIENT)
                .ipv4_options(opts)
                .tcp(40020 + out_len_hint(name), 80)
                .syn()
                .build(),
            expect,
        );
    }
    // IPv6 extension headers.
    let raw = |kind: u8, body: [u8; 6]| Ext::Raw8 { kind, body };
    for (i, (name, exts, expect)) in [
        (
            "IPv6 hop-by-hop (PadN) first: valid",
            vec![Ext::HopByHop],
            Tx("back"),
        ),
        (
            "IPv6 hop-by-hop after destination options",
            vec![Ext::DestOpts, Ext::HopByHop],
            Drop(R::BadExtChain),
        ),
        (
            "IPv6 hop-by-hop twice",
            vec![Ext::HopByHop, Ext::HopByHop],
            Drop(R::BadExtChain),
        ),
        (
            "IPv6 routing header, segments left 1",
            vec![raw(43, [253, 1, 0, 0, 0, 0])],
            Drop(R::RoutingHeader),
        ),
        (
            "IPv6 routing header, segments left 0: valid",
            vec![Ext::Routing],
            Tx("back"),
        ),
        (
            "IPv6 unknown destination option, action 01",
            vec![raw(60, [0x5e, 4, 0, 0, 0, 0])],
            Drop(R::BadExtOption),
        ),
        (
            "IPv6 unknown destination option, action 10",
            vec![raw(60, [0x9e, 4, 0, 0, 0, 0])],
            Drop(R::BadExtOption),
        ),
        (
            "IPv6 unknown hop-by-hop option, action 11",
            vec![raw(0, [0xde, 4, 0, 0, 0, 0])],
            Drop(R::BadExtOption),
        ),
        (
            "IPv6 unknown destination option, action 00: skipped",
            vec![raw(60, [0x1e, 4, 0, 0, 0, 0])],
            Tx("back"),
        ),
        (
            "IPv6 option overrunning its header",
            vec![raw(60, [0x1e, 9, 0, 0, 0, 0])],
            Drop(R::BadExtOption),
        ),
        (
            "IPv6 PadN with non-zero padding",
            vec![raw(60, [1, 4, 0, 7, 0, 0])],
            Drop(R::BadExtOption),
        ),
        (
            "IPv6 jumbo payload option",
            vec![raw(0, [0xc2, 4, 0, 1, 0, 0])],
            Drop(R::BadJumbo),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = from_client6(client6);
        for e in exts {
            p = p.ext(e);
        }
        add(name, syn(p, 41000 + i as u16, 80), expect);
    }
    add(
        "IPv6 first fragment, M = 1, 13 bytes of fragment data",
        from_client6(client6)
            .frag(0, true)
            .udp(41100, 53)
            .payload(b"hello")
            .build(),
        Drop(R::BadFragmentLength),
    );
    add(
        "IPv6 UDP with checksum 0",
        from_client6(client6)
            .udp(41101, 53)
            .udp_zero_checksum()
            .payload(b"query")
            .build(),
        Drop(R::UdpZeroChecksum),
    );
    add(
        "IPv6 UDP (valid)",
        from_client6(client6)
            .udp(41102, 53)
            .payload(b"query")
            .build(),
        Tx("back"),
    );
    add(
        "later IPv4 fragment to a VIP (no reassembly yet)",
        from_client(CLIENT)
            .id(77)
            .frag(8, false)
            .udp(41103, 53)
            .payload(b"rest")
            .build(),
        Drop(R::Fragment),
    );
    add(
        "traffic for the director itself (not a service)",
        syn(
            Pkt::eth(GW, FRONT).ipv4(CLIENT, v4(198, 18, 0, 2)),
            41104,
            22,
        ),
        Pass,
    );

    // --- TTL / hop limit, MTU, no backend ---
    add(
        "TTL 1 toward a service: time exceeded from the VIP",
        syn(from_client(v4(198, 18, 100, 7)).ttl(1), 42000, 80),
        Answer(R::TtlExceeded, "front"),
    );
    add(
        "hop limit 1 toward a service: ICMPv6 time exceeded from the VIP",
        syn(from_client6(client6).ttl(1), 42001, 80),
        Answer(R::TtlExceeded, "front"),
    );
    add(
        "1600-byte SYN with DF toward NAT: fragmentation needed",
        from_client(v4(198, 18, 100, 8))
            .df(true)
            .tcp(42002, 80)
            .syn()
            .payload(&[0x55; 1560])
            .build(),
        Answer(R::TooBig, "front"),
    );
    add(
        "SYN to a service without eligible backend: port unreachable",
        syn(from_client(v4(198, 18, 100, 9)), 42003, 82),
        Answer(R::NoBackend, "front"),
    );
    // The per-destination burst is 6: the seventh answer to one source is not sent.
    let flooder = v4(198, 18, 100, 77);
    for i in 0..7u16 {
        add(
            &format!("TTL 1 flood from one source, frame {}", i + 1),
            syn(from_client(flooder).ttl(1), 43000 + i, 80),
            if i < 6 {
                Answer(R::TtlExceeded, "front")
            } else {
                Drop(R::TtlExceeded)
            },
        );
    }

    // --- trailers: a 40-byte valid SYN after the IP packet must not reach a backend ---
    let trailer = Pkt::ip()
        .ipv4(v4(198, 18, 66, 6), VIP)
        .tcp(6666, 80)
        .syn()
        .build();
    for (name, port, expect) in [
        ("NAT SYN followed by a SYN as trailer", 80u16, Tx("back")),
        ("DR SYN followed by a SYN as trailer", 81, Tx("back")),
        ("FullNAT SYN followed by a SYN as trailer", 443, Tx("back")),
    ] {
        let mut f = syn(from_client(CLIENT), 44000 + port, port);
        f.extend_from_slice(&trailer);
        add(name, f, expect);
    }
    let mut f = from_client(CLIENT).udp(44053, 53).payload(b"query").build();
    f.extend_from_slice(&trailer);
    add("TUN UDP followed by a SYN as trailer", f, Tx("back"));

    // --- too big without DF: fragmented (the packet; TUN: the outer packet) ---
    add(
        "NAT SYN of 2040 bytes without DF: two fragments",
        from_client(CLIENT)
            .df(false)
            .tcp(44500, 80)
            .syn()
            .payload(&[0x5a; 2000])
            .build(),
        Expect::TxFragments("back", 1),
    );
    add(
        "TUN UDP of 3028 bytes without DF: the outer packet in three fragments",
        from_client(CLIENT)
            .df(false)
            .udp(44501, 53)
            .payload(&[0xa5; 3000])
            .build(),
        Expect::TxFragments("back", 2),
    );

    // --- ICMP errors, about the first frame's connection (client:40000 → VIP:80) ---
    let router = v4(198, 18, 0, 1);
    let reply = Pkt::ip().ipv4(VIP, CLIENT).tcp(80, 40000).ack().build();
    let error = |ty: u8, code: u8, quote: &[u8]| {
        Pkt::eth(GW, FRONT)
            .ipv4(router, VIP)
            .ttl(64)
            .icmp_error(ty, code, 0, quote)
            .build()
    };
    add(
        "host unreachable about a reply: translated to the backend",
        error(3, 1, &reply[..28]),
        Tx("back"),
    );
    let mut bad = error(3, 1, &reply[..28]);
    bad[36] ^= 0x5a;
    add(
        "host unreachable with a bad ICMP checksum",
        bad,
        Drop(R::BadIcmpChecksum),
    );
    add(
        "quote too short for the ports",
        error(3, 1, &reply[..22]),
        Drop(R::IcmpShortQuote),
    );
    let mut ihl = reply[..28].to_vec();
    ihl[0] = 0x44;
    add(
        "quoted IPv4 header with IHL 4",
        error(3, 1, &ihl),
        Drop(R::IcmpBadQuote),
    );
    let inner_error = Pkt::ip()
        .ipv4(VIP, CLIENT)
        .icmp_error(3, 3, 0, &Pkt::ip().ipv4(CLIENT, VIP).udp(1, 2).build())
        .build();
    add(
        "error about an ICMP error",
        error(11, 0, &inner_error[..28]),
        Drop(R::IcmpAboutError),
    );
    add(
        "redirect to the VIP (the kernel's)",
        error(5, 1, &reply[..28]),
        Pass,
    );
    let echo = Pkt::ip().ipv4(VIP, CLIENT).icmp_echo(7, 1).build();
    add(
        "unreachable about an echo reply (the kernel's)",
        error(3, 1, &echo[..28]),
        Pass,
    );
    add(
        "established NAT ACK after all of the above",
        from_client(CLIENT).tcp(40000, 80).ack().build(),
        Tx("back"),
    );
    out
}

/// A small distinct offset per option case (keeps the flows apart).
fn out_len_hint(name: &str) -> u16 {
    name.bytes()
        .fold(0u16, |a, b| a.wrapping_mul(31).wrapping_add(u16::from(b)))
        % 500
}
