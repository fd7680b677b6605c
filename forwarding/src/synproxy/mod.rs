//! The SYN proxy of NAT and FullNAT services (after DPVS's `dp_vs_synproxy.c`, itself after
//! Alibaba's LVS, and the kernel's SYN cookies, RFC 4987):
//!
//! 1. A SYN to a protected service is answered by the director itself with a SYN-ACK whose
//!    sequence number is a SYN cookie ([`cookie`]); nothing is stored.
//! 2. The client's ACK returns the cookie (`ack − 1`); a valid one creates the connection and
//!    the director opens its own connection to the backend: the client's ACK frame becomes a
//!    SYN with the client's ISN and the options the cookie carried (MSS, window scale, SACK
//!    permitted, timestamps), rewritten for the backend as any packet of the connection.
//!    Data or a FIN the client sends before the backend answers is copied and held
//!    ([`Hold`]).
//! 3. The backend's SYN-ACK is turned into the ACK that completes the backend's handshake; the
//!    held segments follow it. From then on every segment is translated ([`Translation`]):
//!    backend → client sequence numbers `+ delta` (`delta` = cookie − backend ISN), client →
//!    backend acknowledgement numbers and SACK blocks `− delta`, backend timestamps
//!    `+ ts_delta` and the client's echoes `− ts_delta`, and the backend's window re-scaled when
//!    its window scale differs from the one the director announced — each with an incremental
//!    checksum update (RFC 1624).
//!
//! Choices where DPVS and the kernel differ or are silent: the director announces window scale
//! [`WSCALE`] and translates the backend's windows instead of requiring backends configured to
//! match (DPVS's advice); a SYN with data (TCP Fast Open) is answered as a plain SYN; without
//! timestamps a cookie carries neither window scale nor SACK (as Linux's cookies).

pub mod cookie;

use crate::wire::checksum;

/// The window scale the director announces in its SYN-ACK when the client offered one.
pub const WSCALE: u8 = 7;

/// TCP options as read from a segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    /// TSval, TSecr.
    pub ts: Option<(u32, u32)>,
    /// Offset of TSval from the start of the TCP header.
    pub ts_at: Option<usize>,
    /// Offset of the first SACK block from the start of the TCP header, and the block count.
    pub sack_at: Option<(usize, usize)>,
}

/// Read the options of a TCP header (`tcp` = the header with its options; a malformed option
/// ends the walk). Bounded by the header length (at most 40 bytes).
pub fn parse_options(tcp: &[u8]) -> TcpOptions {
    let mut o = TcpOptions::default();
    let Some(&off) = tcp.get(12) else {
        return o;
    };
    let end = (usize::from(off >> 4) * 4).min(tcp.len());
    let mut i = 20;
    while i < end {
        let kind = tcp[i];
        match kind {
            0 => break,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = tcp.get(i + 1) else { break };
        let len = usize::from(len);
        if len < 2 || i + len > end {
            break;
        }
        let b = &tcp[i..i + len];
        match (kind, len) {
            (2, 4) => o.mss = Some(u16::from_be_bytes([b[2], b[3]])),
            (3, 3) => o.wscale = Some(b[2].min(14)),
            (4, 2) => o.sack_perm = true,
            (5, l) if l >= 10 && (l - 2) % 8 == 0 => o.sack_at = Some((i + 2, (l - 2) / 8)),
            (8, 10) => {
                o.ts = Some((
                    u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                    u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
                ));
                o.ts_at = Some(i + 2);
            }
            _ => {}
        }
        i += len;
    }
    o
}

/// Write the options of a SYN or SYN-ACK in Linux's order (MSS; SACK-permitted and timestamps
/// together, or NOP NOP before either alone; NOP and window scale) into `out`; returns the
/// length (a multiple of 4, at most 20).
pub fn write_syn_options(
    out: &mut [u8; 20],
    mss: u16,
    sack: bool,
    ts: Option<(u32, u32)>,
    wscale: Option<u8>,
) -> usize {
    let mut n = 0;
    let mut put = |b: &[u8]| {
        out[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    let m = mss.to_be_bytes();
    put(&[2, 4, m[0], m[1]]);
    match (ts, sack) {
        (Some((v, e)), s) => {
            put(if s { &[4, 2] } else { &[1, 1] });
            put(&[8, 10]);
            put(&v.to_be_bytes());
            put(&e.to_be_bytes());
        }
        (None, true) => put(&[1, 1, 4, 2]),
        (None, false) => {}
    }
    if let Some(w) = wscale {
        put(&[1, 3, 3, w]);
    }
    n
}

/// Write the timestamp option alone, as on an ACK (NOP NOP TS); returns 12.
pub fn write_ts_option(out: &mut [u8; 20], tsval: u32, tsecr: u32) -> usize {
    out[..4].copy_from_slice(&[1, 1, 8, 10]);
    out[4..8].copy_from_slice(&tsval.to_be_bytes());
    out[8..12].copy_from_slice(&tsecr.to_be_bytes());
    12
}

/// Per-connection state of a SYN-proxied connection, kept beside the connection table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyConn {
    /// The client's ISN (its SYN's sequence number).
    pub client_isn: u32,
    /// The director's ISN toward the client (the cookie).
    pub cookie: u32,
    /// Added to the backend's sequence numbers (cookie − backend ISN).
    pub delta: u32,
    /// Added to the backend's TSvals.
    pub ts_delta: u32,
    /// The TSval the director sent in its SYN-ACK (echoed by the client).
    pub our_ts: u32,
    /// The client's latest TSval (for the ACK the director sends to the backend).
    pub client_ts: u32,
    /// The window field of the client's ACK.
    pub client_win: u16,
    /// Window scale shifts: the client's (as it announced), the backend's, the director's
    /// announcement to the client; [`NO_WSCALE`] when absent.
    pub client_ws: u8,
    pub backend_ws: u8,
    pub our_ws: u8,
    /// [`flags`].
    pub flags: u8,
    /// Segments held for the backend.
    pub held: u8,
    /// The MSS of the director's SYN to the backend (from the cookie).
    pub mss: u16,
    /// When the director last sent its SYN to the backend (wrapping ms).
    pub syn_at: u32,
}

/// No window scale option.
pub const NO_WSCALE: u8 = 0xff;

/// Bits of [`ProxyConn::flags`].
pub mod flags {
    /// Timestamps negotiated with the client.
    pub const TS: u8 = 1;
    /// SACK permitted by the client.
    pub const SACK: u8 = 2;
    /// The backend answered; segments are translated.
    pub const OPEN: u8 = 4;
    /// Timestamps negotiated with the backend too.
    pub const BACKEND_TS: u8 = 8;
    /// The backend never answered the director's SYNs; the client was reset.
    pub const FAILED: u8 = 16;
}

/// What a translation changes in one segment, applied by [`translate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Translation {
    /// Added to the sequence number.
    pub seq: u32,
    /// Added to the acknowledgement number (when ACK is set) and to every SACK edge.
    pub ack: u32,
    /// Added to TSval, to TSecr.
    pub tsval: u32,
    pub tsecr: u32,
    /// Window: shift left by `win_from`, then right by `win_to` (saturating at 65535), when
    /// they differ.
    pub win_from: u8,
    pub win_to: u8,
}

impl ProxyConn {
    /// The translation of a segment from the backend (toward the client).
    pub fn outbound(&self) -> Translation {
        let ts = self.flags & flags::BACKEND_TS != 0;
        Translation {
            seq: self.delta,
            ack: 0,
            tsval: if ts { self.ts_delta } else { 0 },
            tsecr: 0,
            win_from: shift(self.backend_ws),
            win_to: shift(self.our_ws),
        }
    }

    /// The translation of a segment from the client (toward the backend).
    pub fn inbound(&self) -> Translation {
        let ts = self.flags & flags::BACKEND_TS != 0;
        // The backend reads the client's windows with the client's shift only when it agreed
        // to window scaling.
        let backend_reads = if self.backend_ws == NO_WSCALE {
            0
        } else {
            shift(self.client_ws)
        };
        Translation {
            seq: 0,
            ack: self.delta.wrapping_neg(),
            tsval: 0,
            tsecr: if ts { self.ts_delta.wrapping_neg() } else { 0 },
            win_from: shift(self.client_ws),
            win_to: backend_reads,
        }
    }
}

impl ProxyConn {
    /// What undoes [`Self::inbound`] on a segment quoted in an ICMP error from the backend's
    /// side (about a segment the director sent to the backend), before the error goes to the
    /// client: acknowledgement numbers and SACK edges `+ delta`, TSecr `+ ts_delta`. The window
    /// is left as quoted (its re-scaling is not invertible; no stack reads it from a quote).
    pub fn inbound_undone(&self) -> Translation {
        let ts = self.flags & flags::BACKEND_TS != 0;
        Translation {
            ack: self.delta,
            tsecr: if ts { self.ts_delta } else { 0 },
            ..Translation::default()
        }
    }

    /// What undoes [`Self::outbound`] on a segment quoted in an ICMP error from the client's
    /// side (about a segment the director sent to the client), before the error goes to the
    /// backend: sequence number `− delta`, TSval `− ts_delta`; the window as quoted.
    pub fn outbound_undone(&self) -> Translation {
        let ts = self.flags & flags::BACKEND_TS != 0;
        Translation {
            seq: self.delta.wrapping_neg(),
            tsval: if ts { self.ts_delta.wrapping_neg() } else { 0 },
            ..Translation::default()
        }
    }
}

fn shift(ws: u8) -> u8 {
    if ws == NO_WSCALE {
        0
    } else {
        ws
    }
}

#[inline]
fn rd32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Apply `t` to the TCP segment `tcp` (header with options, and payload) in place, updating its
/// checksum incrementally. `opts` are the segment's options ([`parse_options`]). A header cut
/// short (the quote in an ICMP error, at least 8 bytes) has only the fields it holds whole
/// changed: the acknowledgement number needs the flags (14 bytes), the window 16, and the
/// checksum is updated when its 18 bytes are there.
pub fn translate(tcp: &mut [u8], opts: &TcpOptions, t: &Translation) {
    if tcp.len() < 8 {
        return;
    }
    let mut check = match tcp.get(16..18) {
        Some(c) => u16::from_be_bytes([c[0], c[1]]),
        None => 0,
    };
    let add = |tcp: &mut [u8], at: usize, d: u32, check: &mut u16| {
        if d == 0 || at + 4 > tcp.len() {
            return;
        }
        let old = rd32(tcp, at);
        let new = old.wrapping_add(d);
        tcp[at..at + 4].copy_from_slice(&new.to_be_bytes());
        *check = checksum::update32(*check, old.to_be_bytes(), new.to_be_bytes());
    };
    add(tcp, 4, t.seq, &mut check);
    let Some(&tcp_flags) = tcp.get(13) else {
        return checksum_back(tcp, check);
    };
    if tcp_flags & crate::wire::tcp_flags::ACK != 0 {
        add(tcp, 8, t.ack, &mut check);
    }
    if let Some(at) = opts.ts_at {
        add(tcp, at, t.tsval, &mut check);
        add(tcp, at + 4, t.tsecr, &mut check);
    }
    if let Some((at, n)) = opts.sack_at {
        for k in 0..n {
            add(tcp, at + 8 * k, t.ack, &mut check);
            add(tcp, at + 8 * k + 4, t.ack, &mut check);
        }
    }
    if t.win_from != t.win_to && tcp_flags & crate::wire::tcp_flags::SYN == 0 && tcp.len() >= 16 {
        let old = u16::from_be_bytes([tcp[14], tcp[15]]);
        let real = u64::from(old) << t.win_from;
        let new = (real >> t.win_to).min(65_535) as u16;
        tcp[14..16].copy_from_slice(&new.to_be_bytes());
        check = checksum::update16(check, old, new);
    }
    checksum_back(tcp, check);
}

/// Store the updated checksum when the header holds it.
fn checksum_back(tcp: &mut [u8], check: u16) {
    if let Some(c) = tcp.get_mut(16..18) {
        c.copy_from_slice(&check.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        let mut out = [0u8; 20];
        for (sack, ts, ws) in [
            (true, Some((5, 6)), Some(7)),
            (false, Some((5, 0)), None),
            (true, None, Some(0)),
            (false, None, None),
        ] {
            let n = write_syn_options(&mut out, 1460, sack, ts, ws);
            assert_eq!(n % 4, 0);
            let mut tcp = vec![0u8; 20];
            tcp[12] = (((20 + n) / 4) << 4) as u8;
            tcp.extend_from_slice(&out[..n]);
            let o = parse_options(&tcp);
            assert_eq!(o.mss, Some(1460));
            assert_eq!(o.sack_perm, sack);
            assert_eq!(o.ts, ts);
            assert_eq!(o.wscale, ws);
        }
    }

    #[test]
    fn malformed_options_stop_the_walk() {
        // Data offset 8 (12 option bytes): MSS, then an option claiming 40 bytes.
        let mut tcp = vec![0u8; 32];
        tcp[12] = 8 << 4;
        tcp[20..24].copy_from_slice(&[2, 4, 5, 0xb4]);
        tcp[24..26].copy_from_slice(&[8, 40]);
        let o = parse_options(&tcp);
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.ts, None);
        // Length 0 and 1 are refused too (no endless loop).
        tcp[24..26].copy_from_slice(&[8, 0]);
        assert_eq!(parse_options(&tcp).ts, None);
        // A header shorter than its data offset claims.
        assert_eq!(parse_options(&tcp[..22]).mss, None);
    }

    #[test]
    fn window_rescaling_saturates() {
        let mut tcp = vec![0u8; 20];
        tcp[12] = 5 << 4;
        tcp[13] = 0x10;
        tcp[14..16].copy_from_slice(&1000u16.to_be_bytes());
        let t = Translation {
            win_from: 9,
            win_to: 7,
            ..Translation::default()
        };
        translate(&mut tcp, &TcpOptions::default(), &t);
        assert_eq!(u16::from_be_bytes([tcp[14], tcp[15]]), 4000);
        tcp[14..16].copy_from_slice(&30000u16.to_be_bytes());
        translate(&mut tcp, &TcpOptions::default(), &t);
        assert_eq!(u16::from_be_bytes([tcp[14], tcp[15]]), 65535);
    }
}
