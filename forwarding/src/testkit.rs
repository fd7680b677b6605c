//! Test support (feature `testkit`): a fluent packet builder, Katran style, and a checksum
//! verifier that recomputes every checksum in a frame from scratch.
//!
//! Cold path, allocates freely. Independent of the wire layer on purpose: the builder and the
//! verifier have their own (naive, 16-bit-at-a-time) RFC 1071 sum, so tests of the wire layer's
//! incremental updates compare against a second implementation.
//!
//! ```
//! use xvs_forwarding::testkit::{Pkt, verify_checksums};
//! let syn = Pkt::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
//!     .vlan(10)
//!     .ipv4([198, 18, 0, 1], [198, 18, 1, 1])
//!     .ttl(64)
//!     .tcp(40000, 80)
//!     .syn()
//!     .payload(b"hello")
//!     .build();
//! verify_checksums(&syn).unwrap();
//! // The same packet inside IPIP, as a TUN backend receives it (outer header first):
//! let tun = Pkt::eth([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3])
//!     .ipv4([198, 18, 1, 254], [198, 18, 2, 1]).df(true)
//!     .ipv4([198, 18, 0, 1], [198, 18, 1, 1]).ttl(63)
//!     .tcp(40000, 80).syn().payload(b"hello")
//!     .build();
//! verify_checksums(&tun).unwrap();
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub mod hostile;

/// A packet under construction. IP layers are listed outermost first; L4 fields apply to the
/// innermost. Modifiers such as [`Pkt::ttl`] apply to the most recently added IP layer.
#[derive(Clone, Debug, Default)]
pub struct Pkt {
    eth: Option<([u8; 6], [u8; 6])>,
    vlans: Vec<u16>,
    ips: Vec<Ip>,
    l4: L4,
    /// TCP options (padded with zeros to a multiple of 4 bytes).
    tcp_options: Vec<u8>,
    payload: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Ip {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        tos: u8,
        id: u16,
        df: bool,
        frag_offset: u16,
        more: bool,
        options: Vec<u8>,
        bad_checksum: bool,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop: u8,
        tc: u8,
        flow: u32,
        exts: Vec<Ext>,
    },
}

/// IPv6 extension headers the builder can insert (in the order added).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    /// Fragment header: offset in bytes (multiple of 8), more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
    /// Authentication header with a 12-byte ICV (24 bytes in all).
    Ah,
    /// An 8-byte header of protocol number `kind` (0 hop-by-hop, 43 routing, 60 destination
    /// options) whose last six bytes are `body`: options, or routing type, segments left and
    /// four reserved bytes.
    Raw8 {
        kind: u8,
        body: [u8; 6],
    },
}

#[derive(Clone, Debug, Default)]
enum L4 {
    /// No transport header: the payload follows the IP header with this protocol number.
    #[default]
    None,
    Raw(u8),
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
        zero_checksum: bool,
    },
    Icmp {
        ty: u8,
        code: u8,
        rest: u32,
    },
    Sctp {
        sport: u16,
        dport: u16,
    },
}

impl Pkt {
    /// A frame starting with an Ethernet header.
    pub fn eth(src: [u8; 6], dst: [u8; 6]) -> Pkt {
        Pkt {
            eth: Some((src, dst)),
            ..Pkt::default()
        }
    }

    /// A bare IP packet (no Ethernet header), e.g. to embed in an ICMP error.
    pub fn ip() -> Pkt {
        Pkt::default()
    }

    /// Add an 802.1Q tag (call twice for QinQ: the first becomes the 0x88A8 service tag).
    pub fn vlan(mut self, id: u16) -> Pkt {
        self.vlans.push(id);
        self
    }

    /// Add an IPv4 layer (TTL 64, DF clear, ID 0x1234 unless changed).
    pub fn ipv4(mut self, src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Pkt {
        self.ips.push(Ip::V4 {
            src: src.into(),
            dst: dst.into(),
            ttl: 64,
            tos: 0,
            id: 0x1234,
            df: false,
            frag_offset: 0,
            more: false,
            options: Vec::new(),
            bad_checksum: false,
        });
        self
    }

    /// Add an IPv6 layer (hop limit 64).
    pub fn ipv6(mut self, src: impl Into<Ipv6Addr>, dst: impl Into<Ipv6Addr>) -> Pkt {
        self.ips.push(Ip::V6 {
            src: src.into(),
            dst: dst.into(),
            hop: 64,
            tc: 0,
            flow: 0,
            exts: Vec::new(),
        });
        self
    }

    /// Add an IP layer of either family. Panics if the families differ.
    pub fn ip_layer(self, src: IpAddr, dst: IpAddr) -> Pkt {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.ipv6(s, d),
            _ => panic!("Pkt::ip_layer: mixed address families"),
        }
    }

    fn last_ip(&mut self) -> &mut Ip {
        self.ips.last_mut().expect("add an IP layer first")
    }

    /// TTL / hop limit of the last IP layer.
    pub fn ttl(mut self, ttl: u8) -> Pkt {
        match self.last_ip() {
            Ip::V4 { ttl: t, .. } => *t = ttl,
            Ip::V6 { hop, .. } => *hop = ttl,
        }
        self
    }

    /// TOS / traffic class of the last IP layer.
    pub fn tos(mut self, tos: u8) -> Pkt {
        match self.last_ip() {
            Ip::V4 { tos: t, .. } => *t = tos,
            Ip::V6 { tc, .. } => *tc = tos,
        }
        self
    }

    /// IPv6 flow label of the last IP layer.
    pub fn flow_label(mut self, label: u32) -> Pkt {
        if let Ip::V6 { flow, .. } = self.last_ip() {
            *flow = label & 0xfffff;
        }
        self
    }

    /// IPv4 don't-fragment flag.
    pub fn df(mut self, on: bool) -> Pkt {
        if let Ip::V4 { df, .. } = self.last_ip() {
            *df = on;
        }
        self
    }

    /// IPv4 identification.
    pub fn id(mut self, value: u16) -> Pkt {
        if let Ip::V4 { id, .. } = self.last_ip() {
            *id = value;
        }
        self
    }

    /// Fragment fields: offset in bytes (multiple of 8) and more-fragments. IPv4: in the
    /// header; IPv6: adds a fragment extension header.
    pub fn frag(mut self, offset: u16, more: bool) -> Pkt {
        match self.last_ip() {
            Ip::V4 {
                frag_offset,
                more: m,
                ..
            } => {
                *frag_offset = offset / 8;
                *m = more;
            }
            Ip::V6 { exts, .. } => exts.push(Ext::Fragment { offset, more }),
        }
        self
    }

    /// IPv4 options (padded with zeros to a multiple of 4 bytes).
    pub fn ipv4_options(mut self, opts: &[u8]) -> Pkt {
        if let Ip::V4 { options, .. } = self.last_ip() {
            options.extend_from_slice(opts);
            while options.len() % 4 != 0 {
                options.push(0);
            }
        }
        self
    }

    /// Store a wrong IPv4 header checksum (the correct one + 1).
    pub fn bad_ip_checksum(mut self) -> Pkt {
        if let Ip::V4 { bad_checksum, .. } = self.last_ip() {
            *bad_checksum = true;
        }
        self
    }

    /// Append an IPv6 extension header to the last IP layer.
    pub fn ext(mut self, ext: Ext) -> Pkt {
        if let Ip::V6 { exts, .. } = self.last_ip() {
            exts.push(ext);
        }
        self
    }

    /// TCP header (flags none, seq 1, ack 0, window 65535).
    pub fn tcp(mut self, sport: u16, dport: u16) -> Pkt {
        self.l4 = L4::Tcp {
            sport,
            dport,
            flags: 0,
            seq: 1,
            ack: 0,
            window: 0xffff,
        };
        self
    }

    /// OR TCP flags in (see `wire::tcp_flags`).
    pub fn flags(mut self, f: u8) -> Pkt {
        if let L4::Tcp { flags, .. } = &mut self.l4 {
            *flags |= f;
        }
        self
    }

    pub fn syn(self) -> Pkt {
        self.flags(0x02)
    }
    pub fn ack(self) -> Pkt {
        self.flags(0x10)
    }
    pub fn fin(self) -> Pkt {
        self.flags(0x01)
    }
    pub fn rst(self) -> Pkt {
        self.flags(0x04)
    }
    pub fn psh(self) -> Pkt {
        self.flags(0x08)
    }

    /// TCP sequence and acknowledgment numbers.
    pub fn seq_ack(mut self, s: u32, a: u32) -> Pkt {
        if let L4::Tcp { seq, ack, .. } = &mut self.l4 {
            *seq = s;
            *ack = a;
        }
        self
    }

    /// TCP options, raw (padded with end-of-list zeros to a multiple of 4 bytes).
    pub fn tcp_options(mut self, opts: &[u8]) -> Pkt {
        self.tcp_options = opts.to_vec();
        while !self.tcp_options.len().is_multiple_of(4) {
            self.tcp_options.push(0);
        }
        self
    }

    /// TCP window.
    pub fn window(mut self, w: u16) -> Pkt {
        if let L4::Tcp { window, .. } = &mut self.l4 {
            *window = w;
        }
        self
    }

    /// UDP header with a computed checksum.
    pub fn udp(mut self, sport: u16, dport: u16) -> Pkt {
        self.l4 = L4::Udp {
            sport,
            dport,
            zero_checksum: false,
        };
        self
    }

    /// Send the UDP checksum as 0 ("none", IPv4 only in real life).
    pub fn udp_zero_checksum(mut self) -> Pkt {
        if let L4::Udp { zero_checksum, .. } = &mut self.l4 {
            *zero_checksum = true;
        }
        self
    }

    /// ICMP (IPv4) or ICMPv6 (IPv6 innermost layer) message: type, code, and the 4 bytes
    /// after the checksum.
    pub fn icmp(mut self, ty: u8, code: u8, rest: u32) -> Pkt {
        self.l4 = L4::Icmp { ty, code, rest };
        self
    }

    /// Echo request (ICMP 8 / ICMPv6 128).
    pub fn icmp_echo(self, id: u16, seq: u16) -> Pkt {
        let v6 = matches!(self.ips.last(), Some(Ip::V6 { .. }));
        let ty = if v6 { 128 } else { 8 };
        self.icmp(ty, 0, (u32::from(id) << 16) | u32::from(seq))
    }

    /// An ICMP error embedding `original` (an IP packet, e.g. `Pkt::ip()…build()`, cut as the
    /// sender would cut it).
    pub fn icmp_error(self, ty: u8, code: u8, rest: u32, original: &[u8]) -> Pkt {
        self.icmp(ty, code, rest).payload(original)
    }

    /// SCTP common header (verification tag 0x01020304) with its CRC32c; add chunks as
    /// payload.
    pub fn sctp(mut self, sport: u16, dport: u16) -> Pkt {
        self.l4 = L4::Sctp { sport, dport };
        self
    }

    /// A raw protocol number with no transport header (the payload follows the IP header).
    pub fn proto(mut self, p: u8) -> Pkt {
        self.l4 = L4::Raw(p);
        self
    }

    /// Append payload bytes.
    pub fn payload(mut self, data: &[u8]) -> Pkt {
        self.payload.extend_from_slice(data);
        self
    }

    /// The frame (or bare IP packet) bytes.
    pub fn build(&self) -> Vec<u8> {
        let inner = self.ips.last();
        // Transport.
        let (mut bytes, mut next) = self.build_l4(inner);
        // IP layers, innermost first.
        for ip in self.ips.iter().rev() {
            let (b, n) = build_ip(ip, next, &bytes);
            bytes = b;
            next = n;
        }
        // Link.
        let Some((src, dst)) = self.eth else {
            return bytes;
        };
        let mut f = Vec::with_capacity(bytes.len() + 22);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        let n = self.vlans.len();
        for (i, id) in self.vlans.iter().enumerate() {
            let tpid: u16 = if n > 1 && i == 0 { 0x88a8 } else { 0x8100 };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(id & 0xfff).to_be_bytes());
        }
        let et: u16 = match self.ips.first() {
            Some(Ip::V4 { .. }) => 0x0800,
            Some(Ip::V6 { .. }) => 0x86dd,
            None => 0x88b5, // local experimental: a non-IP frame
        };
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(&bytes);
        f
    }

    fn build_l4(&self, inner: Option<&Ip>) -> (Vec<u8>, u8) {
        let mut b = Vec::new();
        let v6 = matches!(inner, Some(Ip::V6 { .. }));
        let proto = match &self.l4 {
            L4::None => 59,
            L4::Raw(p) => *p,
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                window,
            } => {
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&ack.to_be_bytes());
                let doff = ((20 + self.tcp_options.len()) / 4) as u8;
                b.extend_from_slice(&[doff << 4, *flags]);
                b.extend_from_slice(&window.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]);
                b.extend_from_slice(&self.tcp_options);
                6
            }
            L4::Udp { sport, dport, .. } => {
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                let len = (8 + self.payload.len()) as u16;
                b.extend_from_slice(&len.to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                17
            }
            L4::Icmp { ty, code, rest } => {
                b.extend_from_slice(&[*ty, *code, 0, 0]);
                b.extend_from_slice(&rest.to_be_bytes());
                if v6 {
                    58
                } else {
                    1
                }
            }
            L4::Sctp { sport, dport } => {
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0]);
                132
            }
        };
        b.extend_from_slice(&self.payload);
        let pseudo = |p: u8, len: usize| -> u32 {
            match inner {
                Some(Ip::V4 { src, dst, .. }) => {
                    naive_sum(&src.octets()) + naive_sum(&dst.octets()) + u32::from(p) + len as u32
                }
                Some(Ip::V6 { src, dst, .. }) => {
                    naive_sum(&src.octets()) + naive_sum(&dst.octets()) + u32::from(p) + len as u32
                }
                None => 0,
            }
        };
        match &self.l4 {
            L4::Tcp { .. } => {
                let c = naive_checksum(pseudo(6, b.len()), &b);
                b[16..18].copy_from_slice(&c.to_be_bytes());
            }
            L4::Udp { zero_checksum, .. } => {
                if !zero_checksum {
                    let mut c = naive_checksum(pseudo(17, b.len()), &b);
                    if c == 0 {
                        c = 0xffff;
                    }
                    b[6..8].copy_from_slice(&c.to_be_bytes());
                }
            }
            L4::Icmp { .. } => {
                let acc = if v6 { pseudo(58, b.len()) } else { 0 };
                let c = naive_checksum(acc, &b);
                b[2..4].copy_from_slice(&c.to_be_bytes());
            }
            L4::Sctp { .. } => {
                let c = naive_crc32c(&b);
                b[8..12].copy_from_slice(&c.to_le_bytes());
            }
            L4::None | L4::Raw(_) => {}
        }
        (b, proto)
    }
}

/// Wrap `payload` (whose protocol is `next`) in `ip`; returns the packet and its protocol
/// number as seen from an outer IP layer (4 or 41).
fn build_ip(ip: &Ip, next: u8, payload: &[u8]) -> (Vec<u8>, u8) {
    match ip {
        Ip::V4 {
            src,
            dst,
            ttl,
            tos,
            id,
            df,
            frag_offset,
            more,
            options,
            bad_checksum,
        } => {
            let hlen = 20 + options.len();
            let mut h = Vec::with_capacity(hlen + payload.len());
            h.push(0x40 | (hlen / 4) as u8);
            h.push(*tos);
            h.extend_from_slice(&((hlen + payload.len()) as u16).to_be_bytes());
            h.extend_from_slice(&id.to_be_bytes());
            let flags = (if *df { 0x4000 } else { 0 }) | (if *more { 0x2000 } else { 0 });
            h.extend_from_slice(&(flags | (frag_offset & 0x1fff)).to_be_bytes());
            h.push(*ttl);
            h.push(next);
            h.extend_from_slice(&[0, 0]);
            h.extend_from_slice(&src.octets());
            h.extend_from_slice(&dst.octets());
            h.extend_from_slice(options);
            let mut c = naive_checksum(0, &h);
            if *bad_checksum {
                c = c.wrapping_add(1);
            }
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(payload);
            (h, 4)
        }
        Ip::V6 {
            src,
            dst,
            hop,
            tc,
            flow,
            exts,
        } => {
            // Extension headers, each naming the next.
            let mut ext_bytes = Vec::new();
            for (i, e) in exts.iter().enumerate() {
                let nh = match exts.get(i + 1) {
                    Some(n) => ext_number(n),
                    None => next,
                };
                match e {
                    Ext::HopByHop | Ext::DestOpts => {
                        // PadN option filling the 8 bytes.
                        ext_bytes.extend_from_slice(&[nh, 0, 1, 4, 0, 0, 0, 0]);
                    }
                    Ext::Raw8 { body, .. } => {
                        ext_bytes.extend_from_slice(&[nh, 0]);
                        ext_bytes.extend_from_slice(body);
                    }
                    Ext::Routing => {
                        // Routing type 253 (RFC 4727 experimental), segments left 0.
                        ext_bytes.extend_from_slice(&[nh, 0, 253, 0, 0, 0, 0, 0]);
                    }
                    Ext::Fragment { offset, more } => {
                        let fo = (offset & !7) | u16::from(*more);
                        ext_bytes.push(nh);
                        ext_bytes.push(0);
                        ext_bytes.extend_from_slice(&fo.to_be_bytes());
                        ext_bytes.extend_from_slice(&0xdead_beefu32.to_be_bytes());
                    }
                    Ext::Ah => {
                        // Payload len 4 → (4 + 2) · 4 = 24 bytes: SPI, seq, 12-byte ICV.
                        ext_bytes.extend_from_slice(&[nh, 4, 0, 0]);
                        ext_bytes.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 1]);
                        ext_bytes.extend_from_slice(&[0xaa; 12]);
                    }
                }
            }
            let first_next = exts.first().map(ext_number).unwrap_or(next);
            let plen = ext_bytes.len() + payload.len();
            let mut h = Vec::with_capacity(40 + plen);
            let w = (6u32 << 28) | (u32::from(*tc) << 20) | flow;
            h.extend_from_slice(&w.to_be_bytes());
            h.extend_from_slice(&(plen as u16).to_be_bytes());
            h.push(first_next);
            h.push(*hop);
            h.extend_from_slice(&src.octets());
            h.extend_from_slice(&dst.octets());
            h.extend_from_slice(&ext_bytes);
            h.extend_from_slice(payload);
            (h, 41)
        }
    }
}

fn ext_number(e: &Ext) -> u8 {
    match e {
        Ext::HopByHop => 0,
        Ext::Routing => 43,
        Ext::DestOpts => 60,
        Ext::Fragment { .. } => 44,
        Ext::Ah => 51,
        Ext::Raw8 { kind, .. } => *kind,
    }
}

/// RFC 1071, the obvious way: 16-bit words into a u32, odd byte padded.
fn naive_sum(data: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i < data.len() {
        let hi = u32::from(data[i]) << 8;
        let lo = data.get(i + 1).map_or(0, |&b| u32::from(b));
        s += hi | lo;
        i += 2;
    }
    s
}

fn naive_fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn naive_checksum(acc: u32, data: &[u8]) -> u16 {
    !naive_fold(naive_fold(acc) as u32 + naive_sum(data))
}

/// CRC32c bit by bit (RFC 9260 Appendix A), independent of the wire layer's table version.
fn naive_crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in data {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Recompute every checksum in the frame: IPv4 headers, TCP, UDP (0 accepted over IPv4),
/// ICMP, ICMPv6, SCTP (CRC32c) — through IPIP / IPv6 encapsulation, and the IPv4 header of the packet
/// embedded in an ICMP error (its transport checksum is not checked: it is truncated).
/// Fragments' transport checksums are not checked (the datagram is incomplete).
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    if frame.len() < 14 {
        return Err("frame shorter than an Ethernet header".into());
    }
    let mut off = 12;
    let mut et = u16::from_be_bytes([frame[12], frame[13]]);
    while matches!(et, 0x8100 | 0x88a8 | 0x9100) {
        off += 4;
        if frame.len() < off + 2 {
            return Err("truncated VLAN tag".into());
        }
        et = u16::from_be_bytes([frame[off], frame[off + 1]]);
    }
    let ip = &frame[off + 2..];
    match et {
        0x0800 => verify_ip(ip, 4, false, "ip", 0),
        0x86dd => verify_ip(ip, 6, false, "ip", 0),
        _ => Ok(()),
    }
}

fn verify_ip(b: &[u8], version: u8, embedded: bool, path: &str, depth: u32) -> Result<(), String> {
    if depth > 4 {
        return Err(format!("{path}: nested too deep"));
    }
    let first = *b.first().ok_or(format!("{path}: empty IP packet"))?;
    if first >> 4 != version {
        return Err(format!(
            "{path}: IP version {} where {version} expected",
            first >> 4
        ));
    }
    let (src, dst, proto, l4, end, fragment) = if version == 4 {
        let hlen = usize::from(first & 0xf) * 4;
        if hlen < 20 || b.len() < hlen {
            return Err(format!("{path}: IPv4 header truncated / bad IHL"));
        }
        if naive_checksum(0, &b[..hlen]) != 0 {
            return Err(format!(
                "{path}: bad IPv4 header checksum {:#06x}",
                u16::from_be_bytes([b[10], b[11]])
            ));
        }
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if embedded {
            return Ok(());
        }
        if total < hlen || total > b.len() {
            return Err(format!(
                "{path}: IPv4 total length {total} vs {} bytes",
                b.len()
            ));
        }
        let fragment = u16::from_be_bytes([b[6], b[7]]) & 0x3fff != 0;
        (
            b[12..16].to_vec(),
            b[16..20].to_vec(),
            b[9],
            hlen,
            total,
            fragment,
        )
    } else {
        if b.len() < 40 {
            return Err(format!("{path}: IPv6 header truncated"));
        }
        if embedded {
            return Ok(());
        }
        let end = 40 + usize::from(u16::from_be_bytes([b[4], b[5]]));
        if end > b.len() {
            return Err(format!("{path}: IPv6 payload length beyond the frame"));
        }
        let mut next = b[6];
        let mut off = 40;
        let mut fragment = false;
        loop {
            let len = match next {
                0 | 43 | 60 => 8 * (usize::from(*b.get(off + 1).ok_or("ext")?) + 1),
                51 => 4 * (usize::from(*b.get(off + 1).ok_or("ext")?) + 2),
                44 => {
                    fragment = true;
                    8
                }
                _ => break,
            };
            if off + len > end {
                return Err(format!("{path}: IPv6 extension header beyond the packet"));
            }
            next = b[off];
            off += len;
        }
        (
            b[8..24].to_vec(),
            b[24..40].to_vec(),
            next,
            off,
            end,
            fragment,
        )
    };
    let seg = &b[l4..end];
    let pseudo = naive_sum(&src) + naive_sum(&dst) + u32::from(proto) + seg.len() as u32;
    let sub = format!("{path}/{}", proto_name(proto));
    match proto {
        // A fragment holds only part of what it carries: nothing more to verify.
        _ if fragment => return Ok(()),
        4 => return verify_ip(seg, 4, false, &sub, depth + 1),
        41 => return verify_ip(seg, 6, false, &sub, depth + 1),
        6 => {
            if seg.len() < 20 {
                return Err(format!("{sub}: truncated"));
            }
            if naive_checksum(pseudo, seg) != 0 {
                return Err(format!("{sub}: bad TCP checksum"));
            }
        }
        17 => {
            if seg.len() < 8 {
                return Err(format!("{sub}: truncated"));
            }
            let c = u16::from_be_bytes([seg[6], seg[7]]);
            if c == 0 && version == 4 {
                return Ok(());
            }
            if naive_checksum(pseudo, seg) != 0 {
                return Err(format!("{sub}: bad UDP checksum {c:#06x}"));
            }
        }
        132 => {
            if seg.len() < 12 {
                return Err(format!("{sub}: truncated"));
            }
            let mut z = seg.to_vec();
            z[8..12].fill(0);
            if naive_crc32c(&z).to_le_bytes() != seg[8..12] {
                return Err(format!("{sub}: bad SCTP CRC32c"));
            }
        }
        1 | 58 => {
            if (proto == 1) != (version == 4) {
                return Ok(());
            }
            if seg.len() < 8 {
                return Err(format!("{sub}: truncated"));
            }
            let acc = if proto == 58 { pseudo } else { 0 };
            if naive_checksum(acc, seg) != 0 {
                return Err(format!("{sub}: bad ICMP checksum"));
            }
            let error = if proto == 1 {
                matches!(seg[0], 3 | 4 | 5 | 11 | 12)
            } else {
                seg[0] < 128
            };
            if error && seg.len() > 8 {
                return verify_ip(
                    &seg[8..],
                    version,
                    true,
                    &format!("{sub}/embedded"),
                    depth + 1,
                );
            }
        }
        _ => {}
    }
    Ok(())
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        4 => "ipip".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        41 => "ipv6".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => format!("proto{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn builds_verifiable_packets() {
        let v4 = Pkt::eth(A, B)
            .vlan(5)
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8])
            .tcp(1, 2)
            .syn();
        verify_checksums(&v4.build()).unwrap();
        let v6 = Pkt::eth(A, B)
            .ipv6([1u16, 0, 0, 0, 0, 0, 0, 1], [2u16, 0, 0, 0, 0, 0, 0, 2])
            .ext(Ext::HopByHop)
            .ext(Ext::DestOpts)
            .udp(53, 53)
            .payload(b"xyz");
        verify_checksums(&v6.build()).unwrap();
        let err = Pkt::eth(A, B).ipv4([5, 6, 7, 8], [1, 2, 3, 4]).icmp_error(
            3,
            4,
            1400,
            &Pkt::ip().ipv4([1, 2, 3, 4], [5, 6, 7, 8]).tcp(1, 2).build()[..28],
        );
        verify_checksums(&err.build()).unwrap();
    }

    #[test]
    fn detects_bad_checksums() {
        let f = Pkt::eth(A, B)
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8])
            .bad_ip_checksum()
            .udp(1, 2)
            .build();
        assert!(verify_checksums(&f).is_err());
        let mut f = Pkt::eth(A, B)
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8])
            .udp(1, 2)
            .payload(b"ab")
            .build();
        let n = f.len();
        f[n - 1] ^= 0x40;
        assert!(verify_checksums(&f).unwrap_err().contains("UDP"));
    }
}
