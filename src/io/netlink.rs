//! A minimal NETLINK_ROUTE client: dump the kernel's neighbour table (RTM_GETNEIGH, `ip neigh`),
//! and add or remove a host address on an interface (RTM_NEWADDR / RTM_DELADDR, `ip addr`).
//!
//! Hand-rolled (rtnetlink(7), `include/uapi/linux/neighbour.h`) rather than a crate: one request
//! and a flat reply parse are ~100 lines, while `rtnetlink` needs an async runtime and
//! `netlink-packet-route` + `netlink-sys` pull in a large message model for one message type.
//! The parser is safe code over a byte buffer and is unit-tested with captured bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use super::sys;
use super::IoError;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

/// NUD_* states (`include/uapi/linux/neighbour.h`).
pub mod nud {
    pub const INCOMPLETE: u16 = 0x01;
    pub const REACHABLE: u16 = 0x02;
    pub const STALE: u16 = 0x04;
    pub const DELAY: u16 = 0x08;
    pub const PROBE: u16 = 0x10;
    pub const FAILED: u16 = 0x20;
    pub const NOARP: u16 = 0x40;
    pub const PERMANENT: u16 = 0x80;
}

/// One neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighEntry {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
    pub state: u16,
}

impl NeighEntry {
    /// The MAC may be used for forwarding (the kernel itself would send to it).
    pub fn usable(&self) -> bool {
        self.mac.is_some()
            && self.state
                & (nud::REACHABLE
                    | nud::STALE
                    | nud::DELAY
                    | nud::PROBE
                    | nud::PERMANENT
                    | nud::NOARP)
                != 0
    }
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Outcome of parsing one datagram of a dump.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    More,
    Done,
    Error(i32),
}

/// Parse one datagram of an RTM_GETNEIGH dump, appending entries to `out`. Malformed trailing
/// bytes end the datagram; they never panic.
pub fn parse_neigh_dump(buf: &[u8], out: &mut Vec<NeighEntry>) -> Parsed {
    let mut off = 0usize;
    while off + 16 <= buf.len() {
        let Some(len) = u32_at(buf, off).map(|l| l as usize) else {
            break;
        };
        let ty = u16_at(buf, off + 4).unwrap_or(0);
        if len < 16 || off + len > buf.len() {
            break;
        }
        let msg = &buf[off..off + len];
        match ty {
            NLMSG_DONE => return Parsed::Done,
            NLMSG_ERROR => {
                let e = u32_at(msg, 16).map(|v| v as i32).unwrap_or(0);
                if e != 0 {
                    return Parsed::Error(-e);
                }
            }
            RTM_NEWNEIGH if msg.len() >= 28 => {
                let family = msg[16] as i32;
                let ifindex = u32_at(msg, 20).unwrap_or(0);
                let state = u16_at(msg, 24).unwrap_or(0);
                let mut ip = None;
                let mut mac = None;
                let mut a = 28usize;
                while a + 4 <= msg.len() {
                    let alen = u16_at(msg, a).unwrap_or(0) as usize;
                    let aty = u16_at(msg, a + 2).unwrap_or(0) & 0x3fff;
                    if alen < 4 || a + alen > msg.len() {
                        break;
                    }
                    let data = &msg[a + 4..a + alen];
                    match (aty, data.len()) {
                        (NDA_DST, 4) if family == libc::AF_INET => {
                            ip = Some(IpAddr::V4(Ipv4Addr::new(
                                data[0], data[1], data[2], data[3],
                            )));
                        }
                        (NDA_DST, 16) if family == libc::AF_INET6 => {
                            let mut o = [0u8; 16];
                            o.copy_from_slice(data);
                            ip = Some(IpAddr::V6(Ipv6Addr::from(o)));
                        }
                        (NDA_LLADDR, 6) => {
                            let mut m = [0u8; 6];
                            m.copy_from_slice(data);
                            mac = Some(m);
                        }
                        _ => {}
                    }
                    a += (alen + 3) & !3;
                }
                if let Some(ip) = ip {
                    out.push(NeighEntry {
                        ifindex,
                        ip,
                        mac,
                        state,
                    });
                }
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Parsed::More
}

/// A NETLINK_ROUTE socket with `req` sent to the kernel; `what` names the request in errors.
fn netlink_request(req: &[u8], what: &str) -> Result<OwnedFd, IoError> {
    let fd = sys::socket(
        libc::AF_NETLINK,
        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
        libc::NETLINK_ROUTE,
        "NETLINK_ROUTE",
    )?;
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: sending a buffer we own, of the length passed, to the kernel (nl_pid 0).
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(IoError::last("sendto(NETLINK_ROUTE)", what.to_string()));
    }
    Ok(fd)
}

/// One netlink reply into `buf` (retried on EINTR); its length.
fn netlink_recv(fd: &OwnedFd, buf: &mut [u8], what: &str) -> Result<usize, IoError> {
    loop {
        // SAFETY: receiving into a buffer we own of the length passed.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(IoError::sys("recv(NETLINK_ROUTE)", what.to_string(), e));
        }
    }
}

/// Dump the neighbour table of the calling thread's network namespace (IPv4 and IPv6).
pub fn dump_neighbours() -> Result<Vec<NeighEntry>, IoError> {
    let mut req = [0u8; 28];
    req[0..4].copy_from_slice(&28u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    let what = "RTM_GETNEIGH dump";
    let fd = netlink_request(&req, what)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..10_000 {
        let n = netlink_recv(&fd, &mut buf, what)?;
        match parse_neigh_dump(&buf[..n], &mut out) {
            Parsed::More if n > 0 => {}
            Parsed::More | Parsed::Done => return Ok(out),
            Parsed::Error(e) => {
                return Err(IoError::sys(
                    "RTM_GETNEIGH",
                    "neighbour dump",
                    std::io::Error::from_raw_os_error(e),
                ))
            }
        }
    }
    Ok(out)
}

/// An RTM_NEWADDR (`add`) or RTM_DELADDR request for host address `ip` (/32 or /128,
/// IFA_LOCAL and IFA_ADDRESS both `ip`, scope global) on interface `ifindex`, asking for an ack.
pub fn address_request(add: bool, ifindex: u32, ip: IpAddr, seq: u32) -> Vec<u8> {
    let (family, plen, bytes): (u8, u8, Vec<u8>) = match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, 32, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, 128, a.octets().to_vec()),
    };
    let rta_len = 4 + bytes.len();
    let len = 16 + 8 + 2 * ((rta_len + 3) & !3);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    let (ty, flags) = if add {
        (
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        (RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK)
    };
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifaddrmsg: family, prefixlen, flags, scope (0 = universe), index.
    m.extend_from_slice(&[family, plen, 0, 0]);
    m.extend_from_slice(&ifindex.to_ne_bytes());
    for ty in [IFA_LOCAL, IFA_ADDRESS] {
        m.extend_from_slice(&(rta_len as u16).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&bytes);
        m.resize((m.len() + 3) & !3, 0);
    }
    m
}

/// The error code of the NLMSG_ERROR answering `seq` in `buf` (0 = ack), if there is one.
pub fn ack_error(buf: &[u8], seq: u32) -> Option<i32> {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32_at(buf, off)? as usize;
        if len < 16 || off + len > buf.len() {
            return None;
        }
        if u16_at(buf, off + 4)? == NLMSG_ERROR && u32_at(buf, off + 8)? == seq {
            return Some(-(u32_at(buf, off + 16)? as i32));
        }
        off += (len + 3) & !3;
    }
    None
}

/// Add (`add`) or remove host address `ip` on interface `ifindex` of the calling thread's
/// network namespace. Adding an address that is there, or removing one that is not, is an
/// error (EEXIST, EADDRNOTAVAIL).
pub fn host_address(add: bool, ifindex: u32, ip: IpAddr) -> Result<(), IoError> {
    let what = format!(
        "{} {ip} on ifindex {ifindex}",
        if add { "add" } else { "remove" }
    );
    let req = address_request(add, ifindex, ip, 1);
    let fd = netlink_request(&req, &what)?;
    let mut buf = vec![0u8; 8192];
    for _ in 0..100 {
        let n = netlink_recv(&fd, &mut buf, &what)?;
        match ack_error(&buf[..n], 1) {
            Some(0) => return Ok(()),
            Some(e) => {
                return Err(IoError::sys(
                    if add { "RTM_NEWADDR" } else { "RTM_DELADDR" },
                    what,
                    std::io::Error::from_raw_os_error(e),
                ))
            }
            None => {}
        }
    }
    Err(IoError::Invalid(format!(
        "{what}: no netlink acknowledgement"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(family: u8, ifindex: u32, state: u16, dst: &[u8], mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut m = vec![0u8; 28];
        m[4..6].copy_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        m[16] = family;
        m[20..24].copy_from_slice(&ifindex.to_ne_bytes());
        m[24..26].copy_from_slice(&state.to_ne_bytes());
        let mut attr = |ty: u16, d: &[u8]| {
            let l = 4 + d.len();
            m.extend_from_slice(&(l as u16).to_ne_bytes());
            m.extend_from_slice(&ty.to_ne_bytes());
            m.extend_from_slice(d);
            while !m.len().is_multiple_of(4) {
                m.push(0);
            }
        };
        attr(NDA_DST, dst);
        if let Some(mac) = mac {
            attr(NDA_LLADDR, &mac);
        }
        let l = m.len() as u32;
        m[0..4].copy_from_slice(&l.to_ne_bytes());
        m
    }

    #[test]
    fn parses_v4_v6_and_done() {
        let mut buf = msg(
            2,
            3,
            nud::REACHABLE,
            &[198, 18, 3, 11],
            Some([2, 0, 0, 0, 0, 1]),
        );
        let v6: [u8; 16] = "2001:2:0:3::b".parse::<Ipv6Addr>().unwrap().octets();
        buf.extend(msg(10, 4, nud::STALE, &v6, Some([2, 0, 0, 0, 0, 2])));
        buf.extend(msg(2, 3, nud::FAILED, &[198, 18, 3, 12], None));
        let mut out = Vec::new();
        assert_eq!(parse_neigh_dump(&buf, &mut out), Parsed::More);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].ip, "198.18.3.11".parse::<IpAddr>().unwrap());
        assert_eq!(out[0].mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(out[0].usable());
        assert_eq!(out[1].ifindex, 4);
        assert_eq!(out[1].ip, "2001:2:0:3::b".parse::<IpAddr>().unwrap());
        assert!(!out[2].usable());
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        assert_eq!(parse_neigh_dump(&done, &mut out), Parsed::Done);
    }

    #[test]
    fn address_request_layout() {
        let m = address_request(true, 7, "198.18.10.1".parse().unwrap(), 9);
        // nlmsghdr (16) + ifaddrmsg (8) + IFA_LOCAL (8) + IFA_ADDRESS (8), as `ip addr add
        // 198.18.10.1/32 dev X` sends it.
        assert_eq!(m.len(), 40);
        assert_eq!(u32_at(&m, 0), Some(40));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWADDR));
        assert_eq!(
            u16_at(&m, 6),
            Some(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        );
        assert_eq!(u32_at(&m, 8), Some(9));
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 32, 0, 0]);
        assert_eq!(u32_at(&m, 20), Some(7));
        assert_eq!(&m[24..32], &[8, 0, 2, 0, 198, 18, 10, 1]);
        assert_eq!(&m[32..40], &[8, 0, 1, 0, 198, 18, 10, 1]);
        let m = address_request(false, 3, "2001:2:0:10::1".parse().unwrap(), 1);
        assert_eq!(m.len(), 16 + 8 + 20 + 20);
        assert_eq!(u16_at(&m, 4), Some(RTM_DELADDR));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(&m[16..18], &[libc::AF_INET6 as u8, 128]);
    }

    #[test]
    fn ack_errors() {
        let ack = |seq: u32, err: i32| {
            let mut b = Vec::new();
            b.extend_from_slice(&36u32.to_ne_bytes());
            b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            b.extend_from_slice(&0u16.to_ne_bytes());
            b.extend_from_slice(&seq.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&err.to_ne_bytes());
            b.extend_from_slice(&[0; 16]);
            b
        };
        assert_eq!(ack_error(&ack(1, 0), 1), Some(0));
        assert_eq!(ack_error(&ack(1, -17), 1), Some(17));
        assert_eq!(ack_error(&ack(2, -17), 1), None);
        assert_eq!(ack_error(&[0xff; 7], 1), None);
        assert_eq!(ack_error(&[0xff; 64], 1), None);
        assert_eq!(ack_error(&[0; 64], 1), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut out = Vec::new();
        for len in 0..64usize {
            let mut b: Vec<u8> = (0..len as u8).map(|x| x.wrapping_mul(37)).collect();
            if b.len() >= 6 {
                b[4..6].copy_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
            }
            let _ = parse_neigh_dump(&b, &mut out);
            let _ = msg(2, 1, 0, &b[..len.min(16)], None);
        }
        // A length field pointing past the end stops the parse.
        let mut m = msg(2, 1, nud::REACHABLE, &[1, 2, 3, 4], None);
        m[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        out.clear();
        assert_eq!(parse_neigh_dump(&m, &mut out), Parsed::More);
        assert!(out.is_empty());
    }
}
