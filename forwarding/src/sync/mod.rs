//! IPVS connection synchronisation, the sans-I/O part: what one sync datagram carries and how it
//! is encoded and decoded, wire-compatible with the Linux kernel's sync daemon
//! (`net/netfilter/ipvs/ip_vs_sync.c`, protocol version 1, and reception of version 0).
//!
//! A master director sends, for connections that pass its sync rules, one entry per connection
//! (and per persistence template) in UDP datagrams; a backup decodes them and installs the
//! entries in its own connection table so that a failover does not reset clients. This module
//! holds the entry type ([`SyncConn`]), the connection flags as they travel
//! ([`flags`]), and the codec ([`wire`]); sockets, timers and the decision of what to send stay
//! in the binary, and installing is the connection table's business (the kernel's backup checks
//! protocol and state there, not while parsing).
//!
//! ```
//! use xvs_forwarding::sync::{decode, flags, Decoded, Encoder, SyncConn};
//!
//! let conn = SyncConn {
//!     protocol: 6,
//!     flags: flags::DROUTE,
//!     state: 1, // IP_VS_TCP_S_ESTABLISHED
//!     client: "198.18.0.1:40000".parse().unwrap(),
//!     virt: "198.18.1.1:80".parse().unwrap(),
//!     dest: "198.18.2.1:80".parse().unwrap(),
//!     fwmark: 0,
//!     timeout: Some(900),
//!     seq: None,
//!     has_pe: false,
//! };
//! let mut enc = Encoder::new(7, 1472);
//! assert!(enc.push(&conn));
//! let datagram = enc.finish();
//! assert_eq!(datagram.len(), 8 + 36);
//!
//! let mut got = Vec::new();
//! let decoded = decode(&datagram, 7, &mut got).unwrap();
//! assert_eq!(decoded, Decoded::V1 { syncid: 7, count: 1, skipped: 0 });
//! assert_eq!(got, [conn]);
//! ```

pub mod policy;
pub mod wire;

pub use wire::{decode, encode_xvs, DecodeError, Decoded, Encoder, XvsMessage};

/// IPVS connection flags (`include/uapi/linux/ip_vs.h`), as they travel in sync messages.
pub mod flags {
    /// The forwarding method bits.
    pub const FWD_MASK: u32 = 0x7;
    /// NAT (masquerading).
    pub const MASQ: u32 = 0;
    /// Local node.
    pub const LOCALNODE: u32 = 1;
    /// IP-in-IP tunnelling.
    pub const TUNNEL: u32 = 2;
    /// Direct routing.
    pub const DROUTE: u32 = 3;
    /// Cache bypass.
    pub const BYPASS: u32 = 4;
    /// The entry was created by sync (set by the receiving backup).
    pub const SYNC: u32 = 0x20;
    /// The entry is hashed in the table (the kernel clears it before sending).
    pub const HASHED: u32 = 0x40;
    /// No output packets.
    pub const NOOUTPUT: u32 = 0x80;
    /// Not established (counts as inactive).
    pub const INACTIVE: u32 = 0x100;
    /// Output sequence adjustment.
    pub const OUT_SEQ: u32 = 0x200;
    /// Input sequence adjustment.
    pub const IN_SEQ: u32 = 0x400;
    /// Both sequence adjustment bits.
    pub const SEQ_MASK: u32 = 0x600;
    /// No client port set yet.
    pub const NO_CPORT: u32 = 0x800;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// One-packet scheduling (never synced by the kernel).
    pub const ONE_PACKET: u32 = 0x2000;
    /// What a backup keeps of the received flags (`IP_VS_CONN_F_BACKUP_MASK`).
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
    /// What a backup updates on an entry it already holds (`IP_VS_CONN_F_BACKUP_UPD_MASK`).
    pub const BACKUP_UPD_MASK: u32 = INACTIVE | SEQ_MASK;
}

/// One connection (or persistence template) as a sync message carries it. All three addresses
/// have the same family.
///
/// Persistence templates as the kernel sends them: `flags` has [`flags::TEMPLATE`], `client`
/// is the client network (address masked by the service's netmask) with port 0, `dest` has
/// port 0 unless the template is for one service port; for a fwmark service the protocol is 0
/// (`IPPROTO_IP`) and `virt` is the mark written as an address (IPv4: the mark's big-endian
/// bytes; IPv6: those four bytes followed by zeros) with port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncConn {
    /// `IPPROTO_*` (0 for fwmark templates).
    pub protocol: u8,
    /// IPVS connection flags as sent (see [`flags`]); the kernel's master clears
    /// [`flags::HASHED`], and so does [`Encoder`]. A backup keeps only
    /// [`flags::BACKUP_MASK`] and adds [`flags::SYNC`].
    pub flags: u32,
    /// The protocol's IPVS state number (for templates the template state).
    pub state: u16,
    /// caddr:cport.
    pub client: std::net::SocketAddr,
    /// vaddr:vport.
    pub virt: std::net::SocketAddr,
    /// daddr:dport.
    pub dest: std::net::SocketAddr,
    /// The firewall mark (0 in version-0 messages).
    pub fwmark: u32,
    /// Seconds. `None` when the message carries none: version-0 messages, and version-1 entries
    /// whose timeout is 0, which the kernel's backup treats alike (it then uses the protocol's
    /// timeout for the state, or 180 s for templates).
    pub timeout: Option<u32>,
    /// The sequence-adjustment data when present (version 1: the `IPVS_OPT_SEQ_DATA` option;
    /// version 0: the 24 bytes that follow an entry whose flags have [`flags::SEQ_MASK`] bits):
    /// `[in_seq, out_seq]`, each `(init_seq, delta, previous_delta)`.
    pub seq: Option<[(u32, u32, u32); 2]>,
    /// The entry carried persistence-engine data (`IPVS_OPT_PE_DATA`). A kernel backup installs
    /// such an entry only when it has the named engine loaded; xvs has no persistence engines.
    /// A `PE_NAME` option without `PE_DATA` is ignored, as the kernel ignores it. [`Encoder`]
    /// never writes persistence-engine options.
    pub has_pe: bool,
}
