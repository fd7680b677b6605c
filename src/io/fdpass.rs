//! File descriptors passed between processes over a Unix stream socket (SCM_RIGHTS ancillary
//! data, unix(7)), as proxies do for seamless reloads: the descriptors travel with one
//! `sendmsg` and arrive with the `recvmsg` that reads that message's first byte. The cmsg
//! plumbing is nix's; the only unsafe step is taking ownership of the received descriptors.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::IoError;

/// Most descriptors one message may carry (the kernel's SCM_MAX_FD).
pub const MAX_FDS: usize = 253;

/// Send `bytes` (all of them) with `fds` attached to the first `sendmsg`.
pub fn send_with_fds(s: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> Result<(), IoError> {
    if fds.len() > MAX_FDS {
        return Err(IoError::Invalid(format!(
            "{} descriptors to pass, at most {MAX_FDS} per message",
            fds.len()
        )));
    }
    let mut sent = 0usize;
    while sent < bytes.len() {
        let iov = [std::io::IoSlice::new(&bytes[sent..])];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if sent == 0 && !fds.is_empty() {
            &rights
        } else {
            &[]
        };
        let n = sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
            .map_err(|e| IoError::sys("sendmsg(SCM_RIGHTS)", "takeover offer", e.into()))?;
        if n == 0 {
            return Err(IoError::Invalid("sendmsg wrote nothing".into()));
        }
        sent += n;
    }
    Ok(())
}

/// Read into `buf` (at least one byte unless the peer closed) and take the descriptors that
/// arrived with it. Returns the bytes read and the descriptors, owned (closed on drop,
/// close-on-exec set).
pub fn recv_with_fds(s: &UnixStream, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), IoError> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| IoError::sys("recvmsg(SCM_RIGHTS)", "takeover offer", e.into()))?;
    let mut fds = Vec::new();
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let n = msg.bytes;
    for c in msg
        .cmsgs()
        .map_err(|e| IoError::sys("recvmsg", "ancillary data", e.into()))?
    {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in this process for this message
                // (SCM_RIGHTS); nothing else refers to it, so this value becomes its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if truncated {
        return Err(IoError::Invalid(
            "descriptors were cut off (more than the receive buffer takes)".into(),
        ));
    }
    Ok((n, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn descriptors_and_bytes_arrive_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut f = std::fs::File::from(super::super::sys::memfd("t", 0).unwrap());
        f.write_all(b"passed").unwrap();
        send_with_fds(&a, b"hello", &[f.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let mut g = std::fs::File::from(fds.into_iter().next().unwrap());
        g.rewind().unwrap();
        let mut s = String::new();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "passed");
        assert!(send_with_fds(&a, b"x", &[0; MAX_FDS + 1]).is_err());
    }
}
