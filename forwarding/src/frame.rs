//! A frame buffer with headroom, as AF_XDP and AF_PACKET hand them to the worker.
//!
//! The packet occupies `buf[head..head + len]`. Encapsulation (TUN) grows the frame at the front
//! into the headroom; answers (ICMP errors) may replace it. Nothing here can index out of bounds:
//! every resize is checked and reports failure instead of panicking.

/// A mutable view of one frame inside a larger buffer (a UMEM chunk, a ring slot or a `Vec`).
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes starting at `head` in `buf`. Out-of-range values are clamped to
    /// the buffer, so the view is always valid.
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Self {
        let head = head.min(buf.len());
        let len = len.min(buf.len() - head);
        Frame { buf, head, len }
    }

    /// A frame filling the whole buffer, with no headroom.
    pub fn whole(buf: &'a mut [u8]) -> Self {
        let len = buf.len();
        Frame { buf, head: 0, len }
    }

    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the first packet byte in the underlying buffer.
    pub fn head(&self) -> usize {
        self.head
    }

    pub fn headroom(&self) -> usize {
        self.head
    }

    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.head - self.len
    }

    /// Grow the frame by `n` bytes at the front (contents of the new bytes unspecified).
    /// Returns false, leaving the frame unchanged, if the headroom is too small.
    #[must_use]
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        self.head -= n;
        self.len += n;
        true
    }

    /// Remove `n` bytes from the front. Returns false if the frame is shorter than `n`.
    #[must_use]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.head += n;
        self.len -= n;
        true
    }

    /// Shorten the frame to `len` bytes (keeping the start); a frame no longer than `len` stays
    /// as it is.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Set the frame length (keeping the start). Returns false if it would not fit the buffer.
    #[must_use]
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.buf.len() - self.head {
            return false;
        }
        self.len = len;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_is_checked() {
        let mut buf = [0u8; 64];
        let mut f = Frame::new(&mut buf, 20, 30);
        assert_eq!((f.headroom(), f.len(), f.tailroom()), (20, 30, 14));
        assert!(!f.push_front(21));
        assert!(f.push_front(20));
        assert_eq!((f.head(), f.len()), (0, 50));
        assert!(!f.set_len(65));
        assert!(f.set_len(64));
        assert!(f.pull_front(10));
        assert!(!f.pull_front(55));
        // 54 bytes from 10: truncate only shortens.
        f.truncate(60);
        assert_eq!((f.head(), f.len()), (10, 54));
        f.truncate(40);
        assert_eq!((f.head(), f.len(), f.tailroom()), (10, 40, 14));
        let f = Frame::new(&mut buf, 100, 100);
        assert_eq!((f.head(), f.len()), (64, 0));
    }
}
