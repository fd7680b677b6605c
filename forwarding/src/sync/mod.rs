//! Connection sync (placeholder of the codec's types until the wire module lands).
pub mod policy;

/// IPVS connection flags (include/uapi/linux/ip_vs.h), as they travel in sync messages.
pub mod flags {
    pub const FWD_MASK: u32 = 0x7;
    pub const MASQ: u32 = 0;
    pub const LOCALNODE: u32 = 1;
    pub const TUNNEL: u32 = 2;
    pub const DROUTE: u32 = 3;
    pub const BYPASS: u32 = 4;
    pub const SYNC: u32 = 0x20;
    pub const HASHED: u32 = 0x40;
    pub const NOOUTPUT: u32 = 0x80;
    pub const INACTIVE: u32 = 0x100;
    pub const OUT_SEQ: u32 = 0x200;
    pub const IN_SEQ: u32 = 0x400;
    pub const SEQ_MASK: u32 = 0x600;
    pub const NO_CPORT: u32 = 0x800;
    pub const TEMPLATE: u32 = 0x1000;
    pub const ONE_PACKET: u32 = 0x2000;
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
}

/// One connection (or persistence template) as a sync message carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncConn {
    pub protocol: u8,
    pub flags: u32,
    pub state: u16,
    pub client: std::net::SocketAddr,
    pub virt: std::net::SocketAddr,
    pub dest: std::net::SocketAddr,
    pub fwmark: u32,
    pub timeout: Option<u32>,
    pub seq: Option<[(u32, u32, u32); 2]>,
    pub has_pe: bool,
}
