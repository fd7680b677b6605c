//! Loads xvs's XDP program (bpf/xvs_xdp.bpf.c, compiled by build.rs and embedded here) with
//! libbpf, attaches it to each interface through a BPF link, and keeps its maps:
//! `xvs_xsks` (XSKMAP: slot → AF_XDP socket), `xvs_ifaces` (ifindex → first slot of that
//! interface, slot = first + rx queue), `xvs_vips`, `xvs_backends`, `xvs_locals`, `xvs_host`
//! (16-byte addresses, IPv4 as ::ffff:a.b.c.d).
//!
//! Why a BPF link and not a netlink attach (TESTBED.md): a link is owned by its fd, so it goes
//! away with the process even on SIGKILL, and the interface is left as found; a netlink attach
//! would survive a crash and keep redirecting VIP traffic to sockets that no longer exist.

use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

use libbpf_sys as bpf;

use super::IoError;

/// Queues per interface in the XSKMAP layout (slot = port * MAX_QUEUES + queue).
pub const MAX_QUEUES: usize = 64;
/// Interfaces the XSKMAP (1024 entries in bpf/xvs_xdp.bpf.c) has room for.
pub const MAX_PORTS: usize = 1024 / MAX_QUEUES;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xvs_xdp.bpf.o"));

/// How the program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (veth and most NIC drivers); frames arrive on their real rx queue.
    #[default]
    Native,
    /// Generic SKB mode: works everywhere, slower, and delivers every frame on queue 0.
    Generic,
}

/// The key of the address maps.
pub fn addr_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The key of the VIP trie: prefix length over the 16-byte form, then the address (masked).
pub fn lpm_key(net: IpAddr, len: u8) -> [u8; 20] {
    let (bits, max) = match net {
        IpAddr::V4(_) => (96 + u32::from(len.min(32)), 128),
        IpAddr::V6(_) => (u32::from(len.min(128)), 128),
    };
    let a = addr_key(net);
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&bits.min(max).to_ne_bytes());
    for (i, b) in a.iter().enumerate() {
        let keep = (bits as usize).saturating_sub(i * 8).min(8);
        k[4 + i] = if keep == 0 {
            0
        } else {
            b & (0xffu8 << (8 - keep))
        };
    }
    k
}

/// Which address map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrMap {
    /// Destinations that are virtual services.
    Vips,
    /// Sources whose frames are tracked return traffic (NAT replies).
    Backends,
    /// Destinations that are FullNAT local addresses.
    Locals,
    /// The host's own addresses: frames from backends to them stay with the kernel.
    Host,
}

/// The loaded program, its maps and its links. Dropping it detaches everything.
#[derive(Debug)]
pub struct XdpProgram {
    obj: *mut bpf::bpf_object,
    prog_fd: i32,
    xsks: BpfMap,
    ifaces: BpfMap,
    vips: BpfMap,
    backends: BpfMap,
    locals: BpfMap,
    host: BpfMap,
    links: Vec<(u32, OwnedFd)>,
    /// Program and map descriptors handed over by a predecessor ([`XdpProgram::adopt`]; then
    /// `obj` is null), closed on drop.
    _adopted: Vec<OwnedFd>,
}

/// The descriptors of a loaded program, borrowed, as a successor takes them over
/// ([`XdpProgram::handover`], [`XdpProgram::adopt`]).
#[derive(Clone, Debug)]
pub struct XdpHandover {
    pub prog: i32,
    /// In [`MAP_NAMES`] order.
    pub maps: Vec<i32>,
    /// (ifindex, link descriptor).
    pub links: Vec<(u32, i32)>,
}

/// The program's maps, in the order [`XdpHandover::maps`] carries them.
pub const MAP_NAMES: [&str; 6] = [
    "xvs_xsks",
    "xvs_ifaces",
    "xvs_vips",
    "xvs_backends",
    "xvs_locals",
    "xvs_host",
];

// SAFETY: the bpf_object is only touched through &mut self / drop (no shared mutation); the map
// fds are plain integers and map updates are thread-safe syscalls.
unsafe impl Send for XdpProgram {}

/// One map of the loaded object: its fd and the key and value sizes the kernel checks reads
/// and writes against (`update` / `delete` refuse buffers of other sizes, so the kernel never
/// reads past one of ours).
#[derive(Clone, Copy, Debug)]
struct BpfMap {
    fd: i32,
    key_size: usize,
    value_size: usize,
    name: &'static str,
}

impl BpfMap {
    const NONE: BpfMap = BpfMap {
        fd: -1,
        key_size: 0,
        value_size: 0,
        name: "",
    };
}

fn find_map(obj: *mut bpf::bpf_object, name: &'static str) -> Result<BpfMap, IoError> {
    let c = CString::new(name).expect("static map name");
    // SAFETY: obj is a loaded object; c is NUL-terminated and outlives the call.
    let map = unsafe { bpf::bpf_object__find_map_by_name(obj, c.as_ptr()) };
    if map.is_null() {
        return Err(IoError::Invalid(format!("map {name} missing from xvs_xdp")));
    }
    // SAFETY: map is a map of the loaded object `obj`, alive as long as obj.
    let fd = unsafe { bpf::bpf_map__fd(map) };
    // SAFETY: as above.
    let key_size = unsafe { bpf::bpf_map__key_size(map) } as usize;
    // SAFETY: as above.
    let value_size = unsafe { bpf::bpf_map__value_size(map) } as usize;
    if fd < 0 {
        return Err(IoError::sys(
            "bpf_map__fd",
            name.to_string(),
            io::Error::from_raw_os_error(-fd),
        ));
    }
    Ok(BpfMap {
        fd,
        key_size,
        value_size,
        name,
    })
}

impl XdpProgram {
    /// Open and load the embedded object into the kernel (no attach yet).
    pub fn load() -> Result<XdpProgram, IoError> {
        // SAFETY: OBJECT is a static ELF image; libbpf copies what it needs. opts NULL = defaults.
        let obj = unsafe {
            bpf::bpf_object__open_mem(OBJECT.as_ptr().cast(), OBJECT.len() as _, ptr::null())
        };
        if obj.is_null() {
            return Err(IoError::last(
                "bpf_object__open_mem",
                "embedded xvs_xdp.bpf.o",
            ));
        }
        let mut me = XdpProgram {
            obj,
            prog_fd: -1,
            xsks: BpfMap::NONE,
            ifaces: BpfMap::NONE,
            vips: BpfMap::NONE,
            backends: BpfMap::NONE,
            locals: BpfMap::NONE,
            host: BpfMap::NONE,
            links: Vec::new(),
            _adopted: Vec::new(),
        };
        // SAFETY: obj is a freshly opened object owned by `me` (closed in Drop).
        let r = unsafe { bpf::bpf_object__load(obj) };
        if r < 0 {
            let e = io::Error::from_raw_os_error(-r);
            let hint = match -r {
                libc::EPERM => "loading BPF needs CAP_BPF/CAP_SYS_ADMIN (run as root)",
                _ => "is the kernel built with CONFIG_BPF_SYSCALL and XDP sockets?",
            };
            return Err(IoError::hinted("bpf_object__load", "xvs_xdp", hint, e));
        }
        let name = CString::new("xvs_xdp").expect("static");
        // SAFETY: obj is loaded; the program pointer is owned by obj.
        let prog = unsafe { bpf::bpf_object__find_program_by_name(obj, name.as_ptr()) };
        if prog.is_null() {
            return Err(IoError::Invalid(
                "program xvs_xdp missing from object".into(),
            ));
        }
        // SAFETY: prog is a valid program of the loaded object.
        me.prog_fd = unsafe { bpf::bpf_program__fd(prog) };
        me.xsks = find_map(obj, "xvs_xsks")?;
        me.ifaces = find_map(obj, "xvs_ifaces")?;
        me.vips = find_map(obj, "xvs_vips")?;
        me.backends = find_map(obj, "xvs_backends")?;
        me.locals = find_map(obj, "xvs_locals")?;
        me.host = find_map(obj, "xvs_host")?;
        Ok(me)
    }

    /// The descriptors a successor needs to keep this program attached and its maps filled.
    pub fn handover(&self) -> XdpHandover {
        XdpHandover {
            prog: self.prog_fd,
            maps: [
                self.xsks,
                self.ifaces,
                self.vips,
                self.backends,
                self.locals,
                self.host,
            ]
            .iter()
            .map(|m| m.fd)
            .collect(),
            links: self
                .links
                .iter()
                .map(|(i, fd)| (*i, fd.as_raw_fd()))
                .collect(),
        }
    }

    /// Take over a program a predecessor process loaded and attached: its program descriptor,
    /// its maps in [`MAP_NAMES`] order (each checked by name, key and value sizes read from the
    /// kernel) and its BPF links (ifindex, descriptor), which stay attached as long as a
    /// descriptor of theirs is open anywhere.
    pub fn adopt(
        prog: OwnedFd,
        maps: Vec<OwnedFd>,
        links: Vec<(u32, OwnedFd)>,
    ) -> Result<XdpProgram, IoError> {
        if maps.len() != MAP_NAMES.len() {
            return Err(IoError::Invalid(format!(
                "{} map descriptors handed over, {} expected",
                maps.len(),
                MAP_NAMES.len()
            )));
        }
        let mut found = Vec::with_capacity(maps.len());
        for (fd, name) in maps.iter().zip(MAP_NAMES) {
            found.push(map_info(fd.as_raw_fd(), name)?);
        }
        Ok(XdpProgram {
            obj: ptr::null_mut(),
            prog_fd: prog.as_raw_fd(),
            xsks: found[0],
            ifaces: found[1],
            vips: found[2],
            backends: found[3],
            locals: found[4],
            host: found[5],
            links,
            _adopted: std::iter::once(prog).chain(maps).collect(),
        })
    }

    /// Attach to `ifindex` through a BPF link (detached when this value drops or the process dies).
    pub fn attach(&mut self, ifindex: u32, ifname: &str, mode: XdpMode) -> Result<(), IoError> {
        // SAFETY: all-zero is the documented initial state of the opts struct; sz set below.
        let mut opts: bpf::bpf_link_create_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<bpf::bpf_link_create_opts>() as _;
        opts.flags = match mode {
            XdpMode::Native => bpf::XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => bpf::XDP_FLAGS_SKB_MODE,
        };
        // SAFETY: prog_fd is our loaded program; opts is a valid struct for the call.
        let fd = unsafe { bpf::bpf_link_create(self.prog_fd, ifindex as i32, bpf::BPF_XDP, &opts) };
        if fd < 0 {
            let err = -fd;
            let hint = match err {
                libc::EBUSY | libc::EEXIST => format!(
                    "another XDP program is attached to {ifname} (see `ip link show {ifname}`); remove it first"
                ),
                libc::EOPNOTSUPP | libc::EINVAL => format!(
                    "the driver of {ifname} may lack native XDP: try xdp_mode = \"generic\""
                ),
                libc::EPERM => "attaching XDP needs CAP_NET_ADMIN and CAP_BPF (run as root)".into(),
                _ => "kernel XDP support?".into(),
            };
            return Err(IoError::hinted(
                "bpf_link_create(BPF_XDP)",
                format!("attach xvs_xdp to {ifname} in {mode:?} mode"),
                hint,
                io::Error::from_raw_os_error(err),
            ));
        }
        // SAFETY: fd is a fresh link fd we now own; closing it detaches the program.
        self.links
            .push((ifindex, unsafe { OwnedFd::from_raw_fd(fd) }));
        Ok(())
    }

    fn update(&self, m: BpfMap, key: &[u8], val: &[u8]) -> Result<(), IoError> {
        if key.len() != m.key_size || val.len() != m.value_size {
            return Err(IoError::Invalid(format!(
                "{}: key/value of {}/{} bytes for a map of {}/{}",
                m.name,
                key.len(),
                val.len(),
                m.key_size,
                m.value_size
            )));
        }
        // SAFETY: key and val are live buffers of exactly the map's key and value sizes
        // (checked above), which is all the kernel reads.
        let r =
            unsafe { bpf::bpf_map_update_elem(m.fd, key.as_ptr().cast(), val.as_ptr().cast(), 0) };
        if r < 0 {
            return Err(IoError::sys(
                "bpf_map_update_elem",
                m.name.to_string(),
                io::Error::from_raw_os_error(-r),
            ));
        }
        Ok(())
    }

    /// Map the rx queues of `ifindex` to XSKMAP slots `first + queue`.
    pub fn set_interface_slot(&self, ifindex: u32, first: u32) -> Result<(), IoError> {
        self.update(self.ifaces, &ifindex.to_ne_bytes(), &first.to_ne_bytes())
    }

    /// Put an AF_XDP socket into XSKMAP slot `slot`.
    pub fn set_socket(&self, slot: u32, xsk: &impl AsRawFd) -> Result<(), IoError> {
        let fd = xsk.as_raw_fd() as u32;
        self.update(self.xsks, &slot.to_ne_bytes(), &fd.to_ne_bytes())
    }

    fn map(&self, m: AddrMap) -> BpfMap {
        match m {
            AddrMap::Vips => self.vips,
            AddrMap::Backends => self.backends,
            AddrMap::Locals => self.locals,
            AddrMap::Host => self.host,
        }
    }

    /// Add an address to one of the address maps (takes effect at once on attached interfaces).
    /// For `Vips` this is a host prefix.
    pub fn add_addr(&self, m: AddrMap, ip: IpAddr) -> Result<(), IoError> {
        if m == AddrMap::Vips {
            return self.add_vip_prefix(ip, if ip.is_ipv4() { 32 } else { 128 });
        }
        self.update(self.map(m), &addr_key(ip), &[1u8])
    }

    /// Add a VIP network (fwmark rules on a prefix): frames to any address in it are steered.
    pub fn add_vip_prefix(&self, net: IpAddr, len: u8) -> Result<(), IoError> {
        self.update(self.vips, &lpm_key(net, len), &[1u8])
    }

    /// Remove a VIP network added with [`XdpProgram::add_vip_prefix`].
    pub fn remove_vip_prefix(&self, net: IpAddr, len: u8) -> Result<(), IoError> {
        self.delete(self.vips, &lpm_key(net, len))
    }

    /// Remove an address (absent addresses are not an error).
    pub fn remove_addr(&self, m: AddrMap, ip: IpAddr) -> Result<(), IoError> {
        if m == AddrMap::Vips {
            return self.remove_vip_prefix(ip, if ip.is_ipv4() { 32 } else { 128 });
        }
        self.delete(self.map(m), &addr_key(ip))
    }

    fn delete(&self, m: BpfMap, key: &[u8]) -> Result<(), IoError> {
        if key.len() != m.key_size {
            return Err(IoError::Invalid(format!(
                "{}: key of {} bytes for a map of {}",
                m.name,
                key.len(),
                m.key_size
            )));
        }
        // SAFETY: key is a live buffer of exactly the map's key size (checked above).
        let r = unsafe { bpf::bpf_map_delete_elem(m.fd, key.as_ptr().cast()) };
        if r < 0 && -r != libc::ENOENT {
            return Err(IoError::sys(
                "bpf_map_delete_elem",
                m.name.to_string(),
                io::Error::from_raw_os_error(-r),
            ));
        }
        Ok(())
    }

    /// Detach from every interface now (also done on drop).
    pub fn detach_all(&mut self) {
        self.links.clear();
    }

    /// The interfaces the program is attached to.
    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.links.iter().map(|(i, fd)| {
            let _ = fd.as_raw_fd();
            *i
        })
    }
}

/// The map behind `fd`, checked to be named `name` (the kernel keeps 15 characters).
fn map_info(fd: i32, name: &'static str) -> Result<BpfMap, IoError> {
    // SAFETY: plain old data; all-zero is a valid value.
    let mut info: bpf::bpf_map_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<bpf::bpf_map_info>() as u32;
    // SAFETY: info is a live bpf_map_info of `len` bytes, which is all the kernel writes.
    let r = unsafe { bpf::bpf_map_get_info_by_fd(fd, &mut info, &mut len) };
    if r < 0 {
        return Err(IoError::sys(
            "bpf_map_get_info_by_fd",
            format!("handed-over map {name}"),
            io::Error::from_raw_os_error(-r),
        ));
    }
    let got: Vec<u8> = info
        .name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let want = &name.as_bytes()[..name.len().min(15)];
    if got != want {
        return Err(IoError::Invalid(format!(
            "handed-over map is {:?}, expected {name}",
            String::from_utf8_lossy(&got)
        )));
    }
    Ok(BpfMap {
        fd,
        key_size: info.key_size as usize,
        value_size: info.value_size as usize,
        name,
    })
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        self.links.clear();
        if !self.obj.is_null() {
            // SAFETY: obj came from bpf_object__open_mem and is closed exactly once.
            unsafe { bpf::bpf_object__close(self.obj) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_keys_are_masked_and_mapped() {
        let k = lpm_key("198.18.21.77".parse().unwrap(), 23);
        assert_eq!(u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), 96 + 23);
        assert_eq!(&k[4..16], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k[16..], &[198, 18, 20, 0]);
        let k = lpm_key("2001:2:0:10::ff".parse().unwrap(), 64);
        assert_eq!(u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), 64);
        assert_eq!(&k[4..12], &[0x20, 0x01, 0, 2, 0, 0, 0, 0x10]);
        assert_eq!(&k[12..], &[0; 8]);
        let k = lpm_key("198.18.10.1".parse().unwrap(), 40);
        assert_eq!(u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), 128);
    }
}
