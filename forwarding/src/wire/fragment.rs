//! IPv4 fragmentation of a packet too big for the egress MTU whose DF bit is clear, as the
//! kernel's `ip_do_fragment` slow path (`net/ipv4/ip_output.c`) does it:
//!
//! * every fragment carries the header of the original with the same IHL; from the second
//!   fragment on, options whose copy bit (0x80 of the type) is clear are overwritten with NOP
//!   (`ip_options_fragment`);
//! * the payload is cut into pieces of `(mtu − IHL·4)` bytes rounded down to a multiple of 8,
//!   the last one taking the rest; each fragment's offset is the original's plus its position;
//!   MF is set on all but the last, which keeps the original's MF (a fragment of a fragment);
//! * total length and header checksum per fragment; identification, TTL, TOS unchanged.
//!
//! IPv6 is never fragmented by a router (RFC 8200 §5): too-big IPv6 packets are answered with
//! packet too big instead. The director fragments an IPv6 packet only where it is the source:
//! the outer header of an IPv6 tunnel carrying an IPv4 packet without DF ([`fragment_v6`], as
//! `ip6_fragment` in `net/ipv6/ip6_output.c`: a fragment header after the IPv6 header, pieces
//! of `(mtu − 48)` bytes rounded down to 8).

use std::ops::Range;

use super::checksum;
use super::parse::Packet;
use super::{WireError, IPV4_LEN};

/// Cut the IPv4 packet of `p` (in `data`, behind the link header `data[..p.l3]`) into
/// fragments that fit `mtu`; each fragment, link header included, is appended to `out` and
/// its range to `frames`, in order. `Unsupported` for IPv6 or an MTU that cannot carry
/// 8 bytes of payload; on error nothing is appended.
pub fn fragment_v4(
    data: &[u8],
    p: &Packet,
    mtu: u16,
    out: &mut Vec<u8>,
    frames: &mut Vec<Range<usize>>,
) -> Result<(), WireError> {
    if !p.is_v4() {
        return Err(WireError::Unsupported);
    }
    let hlen = p.l4.checked_sub(p.l3).ok_or(WireError::Truncated)?;
    if hlen < IPV4_LEN || p.ip_end > data.len() || p.l4 > p.ip_end {
        return Err(WireError::Truncated);
    }
    let mtu = usize::from(mtu);
    if mtu < hlen + 8 {
        return Err(WireError::Unsupported);
    }
    let header = &data[p.l3..p.l4];
    let flags_off = u16::from_be_bytes([header[6], header[7]]);
    let base = usize::from(flags_off & 0x1fff) * 8;
    let last_more = flags_off & 0x2000 != 0;
    let payload = &data[p.l4..p.ip_end];
    if base + payload.len() > 0xffff {
        return Err(WireError::Malformed);
    }
    let step = (mtu - hlen) & !7;
    // Options of the later fragments: the non-copied ones become NOPs.
    let mut later_header = header.to_vec();
    nop_uncopied_options(&mut later_header[IPV4_LEN..]);
    let mut pos = 0;
    while pos < payload.len() || pos == 0 {
        let len = (payload.len() - pos).min(step);
        let last = pos + len >= payload.len();
        let start = out.len();
        out.extend_from_slice(&data[..p.l3]);
        let h = out.len();
        out.extend_from_slice(if pos == 0 { header } else { &later_header });
        out.extend_from_slice(&payload[pos..pos + len]);
        let hdr = &mut out[h..h + hlen];
        hdr[2..4].copy_from_slice(&((hlen + len) as u16).to_be_bytes());
        let more = !last || last_more;
        let fo = ((base + pos) / 8) as u16 | if more { 0x2000 } else { 0 };
        // DF is clear (the caller fragments only then); keep the reserved bit as it was.
        let fo = fo | (flags_off & 0x8000);
        hdr[6..8].copy_from_slice(&fo.to_be_bytes());
        hdr[10] = 0;
        hdr[11] = 0;
        let c = checksum::checksum(hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        frames.push(start..out.len());
        pos += len;
        if len == 0 {
            break;
        }
    }
    Ok(())
}

/// `ip_options_fragment`: overwrite every option without the copy bit by NOPs.
fn nop_uncopied_options(opts: &mut [u8]) {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&l) = opts.get(i + 1) else {
            return;
        };
        let l = usize::from(l);
        if l < 2 || i + l > opts.len() {
            return;
        }
        if opts[i] & 0x80 == 0 {
            opts[i..i + l].fill(1);
        }
        i += l;
    }
}

/// Cut the IPv6 packet of `p` — one the director built, so without extension headers: the
/// outer header of a tunnel — into fragments of at most `mtu` bytes, each the IPv6 header
/// (payload length and next header 44 changed) followed by a fragment header (the original
/// next header, offset, M, `id`) and its piece. Appended to `out` / `frames` as
/// [`fragment_v4`] does. `Unsupported` for IPv4, for a packet with extension headers or an MTU
/// below IPv6's 1280.
pub fn fragment_v6(
    data: &[u8],
    p: &Packet,
    mtu: u16,
    id: u32,
    out: &mut Vec<u8>,
    frames: &mut Vec<Range<usize>>,
) -> Result<(), WireError> {
    const HDR: usize = 40;
    const FRAG: usize = 8;
    if p.is_v4() || mtu < 1280 {
        return Err(WireError::Unsupported);
    }
    if p.ip_end > data.len() || p.l3 + HDR > p.ip_end {
        return Err(WireError::Truncated);
    }
    let next = data[p.l3 + 6];
    if matches!(next, 0 | 43 | 44 | 51 | 60) {
        return Err(WireError::Unsupported);
    }
    let payload = &data[p.l3 + HDR..p.ip_end];
    let piece = (usize::from(mtu) - HDR - FRAG) & !7;
    let start = out.len();
    let mut offset = 0;
    while offset < payload.len() {
        let end = (offset + piece).min(payload.len());
        let more = end < payload.len();
        let at = out.len();
        out.extend_from_slice(&data[..p.l3 + HDR]);
        let h = at + p.l3;
        let plen = (FRAG + end - offset) as u16;
        out[h + 4..h + 6].copy_from_slice(&plen.to_be_bytes());
        out[h + 6] = 44;
        out.push(next);
        out.push(0);
        out.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&payload[offset..end]);
        frames.push(at..out.len());
        offset = end;
    }
    if frames.is_empty() || out.len() == start {
        return Err(WireError::Truncated);
    }
    Ok(())
}
