//! The wire layer: parse an Ethernet frame into a [`Packet`] (offsets and fields), and rewrite
//! it in place for the forwarding methods (NAT, DR, TUN, FullNAT) with incremental checksums.
//!
//! * [`parse`]: Ethernet (+ 802.1Q / QinQ) → IPv4 / IPv6 (extension headers skipped) →
//!   TCP / UDP / SCTP / ICMP / ICMPv6, with etherparse's per-header slices. Never panics.
//! * [`icmp`]: the packet embedded in ICMP errors ([`icmp::parse_embedded`]), ICMP error
//!   translation for NAT ([`icmp::translate_error`]), and ICMP answers built by the director
//!   in place of the packet that caused them ([`icmp::answer`]).
//! * [`checksum`]: RFC 1071 sums and RFC 1624 incremental updates.
//! * [`fragment`]: IPv4 fragmentation of a packet too big for the egress MTU.
//! * [`rewrite`]: address/port rewrite, TTL decrement, Ethernet header rewrite, TUN
//!   encapsulation.
//!
//! A NAT-in packet, as the pipeline does it (errors become `Verdict::Drop(err.into())`):
//!
//! ```
//! # use xvs_forwarding::{wire::{self, rewrite, Link, Parsed}, Frame};
//! # let mut buf = xvs_forwarding::testkit::Pkt::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
//! #     .ipv4([198, 18, 0, 1], [198, 18, 1, 1]).tcp(40000, 80).syn().build();
//! # let backend = "198.18.2.1".parse().unwrap();
//! # let link = Link { src: [2, 0, 0, 0, 0, 2], dst: [2, 0, 0, 0, 0, 3], vlan: None };
//! let mut frame = Frame::whole(&mut buf);
//! let Parsed::Ip(mut p) = wire::parse(frame.data()) else { return };
//! rewrite::check_mtu(&p, 1500).unwrap(); // TooBig { mtu } → icmp::answer(…)
//! rewrite::dec_ttl(frame.data_mut(), &mut p).unwrap();
//! rewrite::set_dst(frame.data_mut(), &mut p, backend, 8080).unwrap();
//! rewrite::set_link(&mut frame, &mut p, &link).unwrap();
//! # xvs_forwarding::testkit::verify_checksums(frame.data()).unwrap();
//! ```
//!
//! Everything works on plain byte slices (or a [`crate::Frame`] when the frame changes size)
//! plus the [`Packet`] that [`parse`] returned for those bytes. A rewrite that cannot be done
//! (offsets that do not fit the bytes, family mismatch, no headroom) returns a [`WireError`]
//! and never panics; the pipeline turns it into `Verdict::Drop(err.into())`.

pub mod checksum;
pub mod fragment;
pub mod icmp;
pub mod parse;
pub mod rewrite;

pub use icmp::{Embedded, IcmpAnswer, IcmpNat};
pub use parse::{frag_id, frag_range, parse, Frag, Packet, Parsed};
pub use rewrite::{Link, Tunnel};

use crate::verdict::DropReason;

/// IP protocol numbers used by the wire layer.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NONXT: u8 = 59;
    pub const SCTP: u8 = 132;
}

/// TCP flag bits as they appear in byte 13 of the TCP header ([`Packet::tcp_flags`]).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// EtherType values.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88A8;
    /// Pre-standard QinQ outer tag, still seen in the wild.
    pub const QINQ_OLD: u16 = 0x9100;
    pub const IPV6: u16 = 0x86DD;
}

/// Length of an Ethernet header without VLAN tags.
pub const ETH_LEN: usize = 14;
/// Length of one 802.1Q tag.
pub const VLAN_LEN: usize = 4;
/// Length of an IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_LEN: usize = 40;

/// IP version of a packet or address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &std::net::IpAddr) -> Family {
        match addr {
            std::net::IpAddr::V4(_) => Family::V4,
            std::net::IpAddr::V6(_) => Family::V6,
        }
    }
}

/// Why the wire layer could not parse or rewrite a frame. Small and `Copy`; converts into the
/// pipeline's [`DropReason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Shorter than the headers it claims to carry (or a rewrite would reach past the end).
    Truncated,
    /// Inconsistent headers: IP version vs EtherType, IHL < 5, total length < header length,
    /// TCP data offset < 5, UDP length < 8, too many IPv6 extension headers.
    Malformed,
    /// IPv4 header checksum does not verify.
    BadIpChecksum,
    /// The operation needs the transport header, but this is a later fragment.
    Fragment,
    /// TTL / hop limit is ≤ 1: forwarding would expire it.
    TtlExceeded,
    /// Not enough headroom / tailroom in the frame buffer to grow the frame.
    NoHeadroom,
    /// Larger than the MTU and may not be fragmented (IPv4 DF, or IPv6): the sender must be
    /// told (ICMP frag-needed / packet-too-big) to use at most `mtu` bytes.
    TooBig { mtu: u16 },
    /// Larger than the MTU, fragmentation allowed: IPv4 without DF is fragmented
    /// ([`fragment`]) by a pipeline configured to.
    NeedsFragmentation,
    /// Address family mismatch (e.g. an IPv6 address for an IPv4 packet where the method
    /// cannot change family), or a protocol the rewrite does not handle.
    Unsupported,
}

impl WireError {
    pub const fn drop_reason(self) -> DropReason {
        match self {
            WireError::Truncated => DropReason::Truncated,
            WireError::Malformed => DropReason::Malformed,
            WireError::BadIpChecksum => DropReason::BadIpChecksum,
            WireError::Fragment => DropReason::Fragment,
            WireError::TtlExceeded => DropReason::TtlExceeded,
            WireError::NoHeadroom => DropReason::NoHeadroom,
            WireError::TooBig { .. } => DropReason::TooBig,
            WireError::NeedsFragmentation => DropReason::NeedsFragmentation,
            WireError::Unsupported => DropReason::Unsupported,
        }
    }
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> DropReason {
        e.drop_reason()
    }
}
