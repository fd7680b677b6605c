//! Small syscall doors shared by the backends: interface queries through ioctl (they answer for
//! the calling thread's network namespace, unlike /sys which `ip netns exec` remounts), socket
//! options, memory maps, and a guard that enters a named network namespace (tests, tools).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::IoError;

/// An interface as the director sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Queue count from ETHTOOL_GCHANNELS (max of rx and combined), if the driver reports it.
    pub queues: Option<u32>,
}

pub(crate) fn ifreq_for(name: &str) -> Result<libc::ifreq, IoError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(IoError::Invalid(format!("bad interface name {name:?}")));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

fn dgram_socket() -> Result<OwnedFd, IoError> {
    // SAFETY: plain socket(2) call; the returned fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(IoError::last(
            "socket",
            "AF_INET/SOCK_DGRAM for interface ioctls",
        ));
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set interface `name` up (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP added).
pub(crate) fn set_up(name: &str) -> Result<(), IoError> {
    let sock = dgram_socket()?;
    let mut ifr = ifreq_for(name)?;
    // SAFETY: SIOCGIFFLAGS fills the ifreq we own.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    if r < 0 {
        return Err(IoError::last(
            "ioctl(SIOCGIFFLAGS)",
            format!("flags of {name}"),
        ));
    }
    // SAFETY: SIOCGIFFLAGS wrote the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    if r < 0 {
        return Err(IoError::last(
            "ioctl(SIOCSIFFLAGS)",
            format!("set {name} up"),
        ));
    }
    Ok(())
}

/// Look up an interface's index, MAC, MTU and queue count in the current network namespace.
pub fn interface_info(name: &str) -> Result<InterfaceInfo, IoError> {
    let sock = dgram_socket()?;
    let fd = sock.as_raw_fd();
    let cname = CString::new(name).map_err(|_| IoError::Invalid(format!("bad name {name:?}")))?;
    // SAFETY: cname is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(IoError::last(
            "if_nametoindex",
            format!("interface {name} (does it exist in this network namespace?)"),
        ));
    }
    let mut ifr = ifreq_for(name)?;
    // SAFETY: SIOCGIFHWADDR reads the name and writes ifr_hwaddr inside the ifreq we own.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) } < 0 {
        return Err(IoError::last(
            "ioctl(SIOCGIFHWADDR)",
            format!("MAC of {name}"),
        ));
    }
    let mut mac = [0u8; 6];
    // SAFETY: after SIOCGIFHWADDR the union holds ifru_hwaddr.
    let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    for (m, b) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *m = *b as u8;
    }
    let mut ifr = ifreq_for(name)?;
    // SAFETY: SIOCGIFMTU writes ifru_mtu inside the ifreq we own.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut ifr) } < 0 {
        return Err(IoError::last("ioctl(SIOCGIFMTU)", format!("MTU of {name}")));
    }
    // SAFETY: after SIOCGIFMTU the union holds ifru_mtu.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu } as u32;
    let queues = channel_count(fd, name);
    Ok(InterfaceInfo {
        name: name.to_string(),
        ifindex,
        mac,
        mtu,
        queues,
    })
}

#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

fn channel_count(fd: RawFd, name: &str) -> Option<u32> {
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let mut ifr = ifreq_for(name).ok()?;
    ifr.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GCHANNELS writes an ethtool_channels struct through
    // ifru_data, which points at `ch` (repr(C), the kernel's layout) alive for the call.
    if unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut ifr) } < 0 {
        return None;
    }
    Some(ch.rx_count.max(ch.combined_count))
}

/// setsockopt(2) with a plain value, naming the option in the error.
pub(crate) fn setsockopt<T>(
    fd: RawFd,
    level: i32,
    opt: i32,
    val: &T,
    what: &str,
) -> Result<(), IoError> {
    // SAFETY: `val` points at a live T of the size we pass; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(IoError::last("setsockopt", what.to_string()));
    }
    Ok(())
}

/// A memory map released on drop. Its fields are private: only the constructors below, which
/// take the pointer from a successful mmap(2), can make one, so `Drop` unmaps only what it owns.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value; moving it to another thread moves
// ownership (workers are created on the control thread and run on their own).
unsafe impl Send for Mmap {}

impl Mmap {
    /// Start of the mapping (valid for `len()` bytes while `self` lives).
    #[inline]
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length of the mapping in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A shared, populated map of the first `len` bytes of memory file `fd` (a UMEM that
    /// another process can map too, see [`memfd`]).
    pub(crate) fn shared_file(fd: RawFd, len: usize, what: &str) -> Result<Mmap, IoError> {
        // SAFETY: maps `len` bytes of the memory file `fd` (at least that long: the caller
        // sized or measured it); checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(IoError::last("mmap", what.to_string()));
        }
        Ok(Mmap { ptr: p.cast(), len })
    }

    /// A shared map of a socket's ring at `offset`.
    pub(crate) fn socket(fd: RawFd, len: usize, offset: u64, what: &str) -> Result<Mmap, IoError> {
        // SAFETY: maps a kernel ring of `len` bytes of socket `fd`; checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(IoError::last("mmap", what.to_string()));
        }
        Ok(Mmap { ptr: p.cast(), len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and are unmapped exactly once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// An anonymous memory file (memfd_create(2)) of `len` bytes: memory that can be mapped by
/// this process and, through its descriptor passed over a Unix socket, by another one.
pub(crate) fn memfd(name: &str, len: u64) -> Result<OwnedFd, IoError> {
    let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| IoError::sys("memfd_create", name.to_string(), e.into()))?;
    let f = File::from(fd);
    f.set_len(len)
        .map_err(|e| IoError::sys("ftruncate", name.to_string(), e))?;
    Ok(OwnedFd::from(f))
}

/// The size of the file behind `fd` (fstat(2)).
pub(crate) fn file_len(fd: &OwnedFd) -> Result<u64, IoError> {
    let f = File::from(
        fd.try_clone()
            .map_err(|e| IoError::sys("dup", "file size", e))?,
    );
    f.metadata()
        .map(|m| m.len())
        .map_err(|e| IoError::sys("fstat", "file size", e))
}

/// Create a socket, naming it in the error.
pub(crate) fn socket(domain: i32, ty: i32, proto: i32, what: &str) -> Result<OwnedFd, IoError> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(IoError::last("socket", what.to_string()));
    }
    // SAFETY: fresh valid fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A zero-length non-blocking sendto(2): the TX "kick" of AF_XDP and AF_PACKET rings.
/// Transient errors (EAGAIN, EBUSY, ENOBUFS, ENETDOWN) are not failures of the loop.
#[inline]
pub(crate) fn kick_tx(fd: RawFd) {
    // SAFETY: sending zero bytes from a null buffer is what both ring APIs document.
    unsafe {
        libc::sendto(
            fd,
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        );
    }
}

/// A zero-length non-blocking recvfrom(2): the RX/fill "wakeup" of AF_XDP with need_wakeup.
#[inline]
pub(crate) fn kick_rx(fd: RawFd) {
    // SAFETY: receiving into a null zero-length buffer, as the AF_XDP docs describe.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
}

/// While alive, the calling thread is inside network namespace `name` (`/run/netns/<name>`, as
/// `ip netns add` creates it); dropping it returns the thread to where it was. Threads spawned
/// meanwhile stay in `name` for their whole life (used by tests to run workers in a namespace).
///
/// Not `Send`: setns(2) changes the namespace of the calling thread only, so the guard must be
/// dropped on the thread that entered (dropping it elsewhere would move that other thread).
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// send(xvs::io::sys::NetnsGuard::enter("x"));
/// ```
#[derive(Debug)]
pub struct NetnsGuard {
    old: File,
    _not_send: PhantomData<*const ()>,
}

impl NetnsGuard {
    pub fn enter(name: &str) -> Result<NetnsGuard, IoError> {
        let old = File::open("/proc/thread-self/ns/net")
            .map_err(|e| IoError::sys("open", "/proc/thread-self/ns/net", e))?;
        let path = format!("/run/netns/{name}");
        let new = File::open(&path).map_err(|e| IoError::sys("open", path.clone(), e))?;
        setns(new.as_raw_fd(), &path)?;
        Ok(NetnsGuard {
            old,
            _not_send: PhantomData,
        })
    }
}

fn setns(fd: RawFd, what: &str) -> Result<(), IoError> {
    // SAFETY: setns(2) on a namespace fd we hold open; affects only the calling thread.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
        return Err(IoError::sys(
            "setns",
            what.to_string(),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = setns(self.old.as_raw_fd(), "back to the original namespace");
    }
}

/// Send one ICMP/ICMPv6 echo request to `ip` from a raw socket: the kernel must resolve the
/// neighbour to send it, and the reply (not an ICMP error) is passed to the kernel by the XDP
/// program and never reaches the pipeline. Used to resolve and re-validate next hops.
pub fn icmp_echo(ip: std::net::IpAddr, ident: u16) -> Result<(), IoError> {
    use std::net::IpAddr;
    let (domain, proto) = match ip {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    let fd = socket(
        domain,
        libc::SOCK_RAW,
        proto,
        "raw ICMP socket for neighbour resolution",
    )?;
    // Echo request: type, code, checksum, identifier, sequence, 8 bytes of payload.
    let mut msg = [0u8; 16];
    msg[0] = if ip.is_ipv4() { 8 } else { 128 };
    msg[4..6].copy_from_slice(&ident.to_be_bytes());
    msg[6..8].copy_from_slice(&1u16.to_be_bytes());
    msg[8..16].copy_from_slice(b"xvs-arp!");
    if ip.is_ipv4() {
        // ICMPv4 checksum over the message (the kernel fills it in for ICMPv6 raw sockets).
        let mut sum: u32 = msg
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        msg[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
    let r = match ip {
        IpAddr::V4(a) => {
            // SAFETY: plain old data.
            let mut sa: libc::sockaddr_in = unsafe { zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            // SAFETY: msg and sa are valid for the lengths passed.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    libc::MSG_DONTWAIT,
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        IpAddr::V6(a) => {
            // SAFETY: plain old data.
            let mut sa: libc::sockaddr_in6 = unsafe { zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr = a.octets();
            // SAFETY: msg and sa are valid for the lengths passed.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    libc::MSG_DONTWAIT,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if r < 0 {
        return Err(IoError::last("sendto(ICMP echo)", format!("resolve {ip}")));
    }
    Ok(())
}

/// Every IPv4/IPv6 address of every interface in the calling thread's network namespace
/// (getifaddrs(3), which asks the kernel over netlink).
pub fn host_addresses() -> Result<Vec<std::net::IpAddr>, IoError> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } < 0 {
        return Err(IoError::last("getifaddrs", "the host's addresses"));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says which struct it is.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if fam == libc::AF_INET {
                // SAFETY: family AF_INET: the sockaddr is a sockaddr_in.
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(sa.sin_addr.s_addr.to_ne_bytes())));
            } else if fam == libc::AF_INET6 {
                // SAFETY: family AF_INET6: the sockaddr is a sockaddr_in6.
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once; no reference into it survives.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}
