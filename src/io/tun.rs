//! The announce interface: a TUN device (`/dev/net/tun`, `IFF_TUN | IFF_NO_PI`, not persistent)
//! that lives exactly as long as its file descriptor, and the addresses on it.
//!
//! The kernel deletes a non-persistent TUN device when the last descriptor of it closes — also
//! when its process is killed — and with it every address and route on the device
//! (Documentation/networking/tuntap.rst, `tun_chr_close` → `tun_detach`). A routing daemon that
//! announces the prefixes of this device's addresses (BIRD's `protocol direct`) therefore
//! withdraws them when the process dies, without anyone telling it. Addresses are added and
//! removed with RTM_NEWADDR / RTM_DELADDR (rtnetlink(7)), each request acknowledged.

use std::fs::OpenOptions;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::sys;
use super::IoError;

/// `TUNSETIFF` = `_IOW('T', 202, int)` (include/uapi/linux/if_tun.h).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `TUNGETIFF` = `_IOR('T', 210, unsigned int)`.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// A TUN device owned by this process; the kernel removes it when this value is dropped.
#[derive(Debug)]
pub struct TunDevice {
    /// Held open for the device's lifetime; closing it deletes the device.
    _fd: OwnedFd,
    name: String,
    ifindex: u32,
}

impl TunDevice {
    /// Create TUN device `name` in the calling thread's network namespace and set it up. Fails
    /// if a device of that name exists and is not a free TUN device.
    pub fn create(name: &str) -> Result<TunDevice, IoError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| IoError::sys("open", "/dev/net/tun", e))?;
        let fd: OwnedFd = file.into();
        let mut ifr = sys::ifreq_for(name)?;
        ifr.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI;
        // SAFETY: TUNSETIFF reads and writes the ifreq we own, on a descriptor we own.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr) };
        if r < 0 {
            return Err(IoError::last(
                "ioctl(TUNSETIFF)",
                format!("TUN device {name}"),
            ));
        }
        sys::set_up(name)?;
        let ifindex = sys::interface_info(name)?.ifindex;
        Ok(TunDevice {
            _fd: fd,
            name: name.to_string(),
            ifindex,
        })
    }

    /// Take over the TUN device a predecessor process created (`xvs run --takeover`): `fd` is
    /// its descriptor, checked (TUNGETIFF) to be attached to device `name`.
    pub fn adopt(fd: OwnedFd, name: &str) -> Result<TunDevice, IoError> {
        let mut ifr = sys::ifreq_for(name)?;
        // SAFETY: TUNGETIFF writes the attached device's name and flags into the ifreq we own,
        // on a descriptor we own.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, &mut ifr) };
        if r < 0 {
            return Err(IoError::last(
                "ioctl(TUNGETIFF)",
                format!("handed-over TUN device {name}"),
            ));
        }
        let got: Vec<u8> = ifr
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        if got != name.as_bytes() {
            return Err(IoError::Invalid(format!(
                "handed-over TUN descriptor is attached to {:?}, not {name}",
                String::from_utf8_lossy(&got)
            )));
        }
        let ifindex = sys::interface_info(name)?.ifindex;
        Ok(TunDevice {
            _fd: fd,
            name: name.to_string(),
            ifindex,
        })
    }

    /// The descriptor that keeps the device (for a successor, see [`TunDevice::adopt`]).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self._fd.as_raw_fd()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Add `ip` as a host address (/32, /128) on the device.
    pub fn add(&self, ip: IpAddr) -> Result<(), IoError> {
        super::netlink::host_address(true, self.ifindex, ip)
    }

    /// Remove host address `ip` from the device.
    pub fn remove(&self, ip: IpAddr) -> Result<(), IoError> {
        super::netlink::host_address(false, self.ifindex, ip)
    }
}
