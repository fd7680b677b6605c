//! A small reference encoder/decoder of kernel IPVS sync messages, protocol version 1, for tests
//! that talk to the kernel (the layout of `struct ip_vs_sync_mesg`, `ip_vs_sync_v4` and
//! `ip_vs_sync_v6` in the kernel's net/netfilter/ipvs/ip_vs_sync.c; /work/shared/IPVS.md §6).
//!
//! Message: 8-byte header (reserved 0, syncid, size u16 = whole datagram, count, version 1,
//! spare u16 0), then `count` entries, each padded to 4 bytes. Entry: type (bit 0: IPv6),
//! protocol, ver_size (u16: version in the top 4 bits, must be 0; length without padding in the
//! low 12), flags u32, state u16, cport, vport, dport u16, fwmark u32, timeout u32 (seconds),
//! caddr, vaddr, daddr (4 or 16 bytes each), then options (type u8, length u8, data) up to the
//! entry's length. All numbers big-endian. This is test code: it reads what the kernel sends
//! and builds what the tests send; xvs's own codec is separate.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const HEADER_LEN: usize = 8;
pub const ENTRY_V4_LEN: usize = 36;
pub const ENTRY_V6_LEN: usize = 72;
/// `IP_VS_CONN_F_TEMPLATE`.
pub const F_TEMPLATE: u32 = 0x1000;
/// `IP_VS_CONN_F_INACTIVE`.
pub const F_INACTIVE: u32 = 0x0100;
/// `IP_VS_CONN_F_FWD_MASK`: 0 masquerading (NAT), 1 local, 2 tunnel, 3 direct routing.
pub const F_FWD_MASK: u32 = 0x0007;

/// One connection entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub protocol: u8,
    pub flags: u32,
    pub state: u16,
    pub client: SocketAddr,
    pub virtual_: SocketAddr,
    pub dest: SocketAddr,
    pub fwmark: u32,
    /// Seconds.
    pub timeout: u32,
    /// Option bytes after the addresses (type, length, data ...), as sent.
    pub options: Vec<u8>,
}

impl Entry {
    pub fn template(&self) -> bool {
        self.flags & F_TEMPLATE != 0
    }

    /// "TCP", "UDP", "SCTP" or the number.
    pub fn proto_name(&self) -> String {
        match self.protocol {
            6 => "TCP".into(),
            17 => "UDP".into(),
            132 => "SCTP".into(),
            p => p.to_string(),
        }
    }

    /// The state's name as ipvsadm -Lnc prints it for TCP, UDP and templates (the state tables of
    /// ip_vs_proto_tcp.c and _udp.c; ip_vs_conn.c's NONE / ASSURED for templates), else
    /// "state N".
    pub fn state_name(&self) -> String {
        const TCP: [&str; 11] = [
            "NONE",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "SYNACK",
        ];
        let s = self.state as usize;
        let name = if self.template() {
            ["NONE", "ASSURED"].get(s).copied()
        } else {
            match self.protocol {
                6 => TCP.get(s).copied(),
                17 => (s == 0).then_some("UDP"),
                _ => None,
            }
        };
        name.map(str::to_string)
            .unwrap_or_else(|| format!("state {s}"))
    }
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub syncid: u8,
    pub version: u8,
    pub entries: Vec<Entry>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addr(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
    }
}

/// Decodes a version-1 message; Err says what is wrong.
pub fn decode(b: &[u8]) -> Result<Message, String> {
    if b.len() < HEADER_LEN {
        return Err(format!("{} bytes: shorter than the header", b.len()));
    }
    if b[0] != 0 {
        return Err(format!("byte 0 is {} (a version 0 message?)", b[0]));
    }
    let size = be16(b, 2) as usize;
    if size != b.len() {
        return Err(format!("size field {size} but {} bytes", b.len()));
    }
    if b[5] != 1 || be16(b, 6) != 0 {
        return Err(format!(
            "version {} spare {} (not version 1)",
            b[5],
            be16(b, 6)
        ));
    }
    let count = b[4] as usize;
    let mut entries = Vec::with_capacity(count);
    let mut at = HEADER_LEN;
    let mut end = HEADER_LEN;
    for i in 0..count {
        if at + 4 > b.len() {
            return Err(format!("entry {i} starts past the end"));
        }
        let v6 = match b[at] {
            0 => false,
            1 => true,
            t => return Err(format!("entry {i}: type {t}")),
        };
        let ver_size = be16(b, at + 2);
        if ver_size >> 12 != 0 {
            return Err(format!("entry {i}: entry version {}", ver_size >> 12));
        }
        let len = (ver_size & 0x0fff) as usize;
        let fixed = if v6 { ENTRY_V6_LEN } else { ENTRY_V4_LEN };
        if len < fixed || at + len > b.len() {
            return Err(format!("entry {i}: length {len}"));
        }
        let e = &b[at..at + len];
        let alen = if v6 { 16 } else { 4 };
        let ip = |k: usize| addr(e, 24 + k * alen, v6);
        entries.push(Entry {
            protocol: e[1],
            flags: be32(e, 4),
            state: be16(e, 8),
            client: SocketAddr::new(ip(0), be16(e, 10)),
            virtual_: SocketAddr::new(ip(1), be16(e, 12)),
            dest: SocketAddr::new(ip(2), be16(e, 14)),
            fwmark: be32(e, 16),
            timeout: be32(e, 20),
            options: e[fixed..].to_vec(),
        });
        end = at + len;
        at += (len + 3) & !3;
    }
    if end != b.len() {
        return Err(format!("{} bytes after the last entry", b.len() - end));
    }
    Ok(Message {
        syncid: b[1],
        version: b[5],
        entries,
    })
}

/// Encodes a version-1 message (IPv4 or IPv6 entries without options unless given).
pub fn encode(syncid: u8, entries: &[Entry]) -> Vec<u8> {
    let mut out = vec![0, syncid, 0, 0, entries.len() as u8, 1, 0, 0];
    for e in entries {
        while out.len() % 4 != 0 {
            out.push(0);
        }
        let v6 = e.client.is_ipv6();
        let len = if v6 { ENTRY_V6_LEN } else { ENTRY_V4_LEN } + e.options.len();
        out.push(u8::from(v6));
        out.push(e.protocol);
        out.extend_from_slice(&(len as u16 & 0x0fff).to_be_bytes());
        out.extend_from_slice(&e.flags.to_be_bytes());
        out.extend_from_slice(&e.state.to_be_bytes());
        for a in [e.client, e.virtual_, e.dest] {
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        out.extend_from_slice(&e.fwmark.to_be_bytes());
        out.extend_from_slice(&e.timeout.to_be_bytes());
        for a in [e.client, e.virtual_, e.dest] {
            match a.ip() {
                IpAddr::V4(v) => out.extend_from_slice(&v.octets()),
                IpAddr::V6(v) => out.extend_from_slice(&v.octets()),
            }
        }
        out.extend_from_slice(&e.options);
    }
    let size = out.len() as u16;
    out[2..4].copy_from_slice(&size.to_be_bytes());
    out
}
