//! Internet checksums.
//!
//! * Full computation, RFC 1071: the one's-complement sum of the data as big-endian 16-bit words
//!   (an odd last byte padded with zero), folded to 16 bits, complemented. We sum 32-bit words
//!   into a 64-bit accumulator ("parallel summation", RFC 1071 §2(C)); folding the result gives
//!   the same 16-bit sum because 2^16 ≡ 1 (mod 2^16 − 1).
//! * Pseudo-headers for TCP / UDP / ICMPv6: RFC 793 / RFC 768 (IPv4), RFC 8200 §8.1 (IPv6).
//! * Incremental update, RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')` for every changed 16-bit
//!   word m → m'; [`update32`] and [`update128`] apply it to the 2 and 8 words of an IPv4 and
//!   IPv6 address. This is what the kernel's `csum_replace4` / `inet_proto_csum_replace16` do.
//!
//! UDP: a transmitted checksum of 0 means "none" over IPv4, so a computed 0 is sent as 0xFFFF
//! (RFC 768); see [`udp_fixup`].
//!
//! SCTP uses CRC32c instead (RFC 9260 §6.8 and Appendix A; Castagnoli polynomial, reflected
//! 0x82F63B78, initial value and final XOR all ones). It covers the SCTP packet only (no
//! pseudo-header) and is stored least significant byte first, like the kernel's
//! `sctp_compute_cksum` (`cpu_to_le32`). [`crc32c`] is the byte-at-a-time table version.

/// Add `data` to the unfolded one's-complement accumulator `acc`.
#[inline(always)]
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    // The last 1–3 bytes, padded with zeros to a 32-bit word (no memcpy call).
    match *chunks.remainder() {
        [a] => acc + (u64::from(a) << 24),
        [a, b] => acc + (u64::from(a) << 24) + (u64::from(b) << 16),
        [a, b, c] => acc + (u64::from(a) << 24) + (u64::from(b) << 16) + (u64::from(c) << 8),
        _ => acc,
    }
}

/// Fold an accumulator to 16 bits with end-around carry (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Fold a 32-bit accumulator to 16 bits (not complemented). Two end-around carries are
/// always enough: the first leaves at most 0x1FFFE, the second at most 0xFFFF.
#[inline]
pub fn fold32(acc: u32) -> u16 {
    let a = (acc & 0xffff) + (acc >> 16);
    ((a & 0xffff) + (a >> 16)) as u16
}

/// Fold a 64-bit accumulator to 16 bits (not complemented): [`fold`]'s answer, in three
/// steps (2^32 ≡ 1 mod 0xFFFF, so one end-around carry takes it to 32 bits, then [`fold32`]).
#[inline(always)]
pub fn fold64(acc: u64) -> u16 {
    let (s, c) = (acc as u32).overflowing_add((acc >> 32) as u32);
    fold32(s + u32::from(c))
}

/// [`verifies`] for a 20-byte IPv4 header (no options). The five 32-bit words are summed as
/// they lie in memory (the one's-complement sum does not depend on byte order, RFC 1071
/// §2(B)) and the sum tested modulo 0xFFFF: a fold keeps the value modulo 0xFFFF, and a nonzero
/// sum folds to 0xFFFF exactly when it is a multiple of 0xFFFF.
#[inline(always)]
pub fn verifies_ipv4_header(h: &[u8; 20]) -> bool {
    let w = |o: usize| u64::from(u32::from_ne_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]));
    let acc = w(0) + w(4) + w(8) + w(12) + w(16);
    acc != 0 && acc % 0xffff == 0
}

/// The RFC 1071 checksum of `data`: `!fold(sum(data))`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// The checksum of `data` with an already accumulated pseudo-header `acc`.
#[inline]
pub fn checksum_with(acc: u64, data: &[u8]) -> u16 {
    !fold(sum(data, acc))
}

/// Does `data` (which contains its own checksum field) verify? True when its sum folds to 0xFFFF.
#[inline]
pub fn verifies(acc: u64, data: &[u8]) -> bool {
    fold(sum(data, acc)) == 0xffff
}

/// Unfolded sum of the IPv4 pseudo-header (RFC 793 §3.1): src, dst, zero, protocol, length.
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u64 {
    u64::from(u32::from_be_bytes(src))
        + u64::from(u32::from_be_bytes(dst))
        + u64::from(proto)
        + u64::from(len)
}

/// Unfolded sum of the IPv6 pseudo-header (RFC 8200 §8.1): src, dst, 32-bit length, next header.
#[inline]
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], proto: u8, len: u32) -> u64 {
    sum(&src, 0) + sum(&dst, 0) + u64::from(len) + u64::from(proto)
}

/// RFC 1624 eqn. 3 for one 16-bit word: the new checksum after `old` became `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!check) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

/// RFC 1624 for `N` changed bytes (N even): every 16-bit word of `old` replaced by `new`.
#[inline]
pub fn update_bytes<const N: usize>(check: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    let mut acc = u64::from(!check);
    let mut i = 0;
    while i + 1 < N {
        acc += u64::from(!u16::from_be_bytes([old[i], old[i + 1]]));
        acc += u64::from(u16::from_be_bytes([new[i], new[i + 1]]));
        i += 2;
    }
    !fold(acc)
}

/// RFC 1624 for a 32-bit word, e.g. an IPv4 address.
#[inline]
pub fn update32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    update_bytes(check, &old, &new)
}

/// RFC 1624 for a 128-bit value, e.g. an IPv6 address.
#[inline]
pub fn update128(check: u16, old: [u8; 16], new: [u8; 16]) -> u16 {
    update_bytes(check, &old, &new)
}

/// A UDP checksum as transmitted: a computed 0 is sent as 0xFFFF (RFC 768), since 0 means
/// "no checksum" over IPv4 (and is invalid over IPv6).
#[inline]
pub fn udp_fixup(check: u16) -> u16 {
    if check == 0 {
        0xffff
    } else {
        check
    }
}

/// The CRC32c lookup table, built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC32c of `data` (RFC 9260 Appendix A; `crc32c(b"123456789") == 0xe306_9283`).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Recompute the CRC32c of the SCTP packet `seg` (common header first) in place. False if
/// `seg` is shorter than the 12-byte common header.
#[must_use]
pub fn sctp_fix(seg: &mut [u8]) -> bool {
    if seg.len() < 12 {
        return false;
    }
    seg[8..12].fill(0);
    let c = crc32c(seg);
    seg[8..12].copy_from_slice(&c.to_le_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
        // Odd length: the last byte is padded with zero.
        assert_eq!(
            fold(sum(&data[..7], 0)),
            fold(sum(&[0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0], 0))
        );
    }

    /// A captured IPv4 header (Wikipedia's example): checksum 0xb861.
    #[test]
    fn ipv4_header_capture() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verifies(0, &h));
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    /// RFC 1624 §4's example: HC 0xdd2f, m 0x5555 → m' 0x3285 gives HC' 0x0000.
    #[test]
    fn rfc1624_example() {
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn incremental_matches_full() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let new = [10, 1, 2, 3];
        let c = update32(0xb861, [0xc0, 0xa8, 0x00, 0xc7], new);
        h[16..20].copy_from_slice(&new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(c, checksum(&h));
    }

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C (Castagnoli), and RFC 3720 §B.4's 32 zero bytes.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    }

    #[test]
    fn fold32_matches_fold() {
        for acc in [
            0u32,
            1,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0x1_ffff,
            0xffff_ffff,
            0x8000_7fff,
        ] {
            assert_eq!(fold32(acc), fold(u64::from(acc)), "{acc:#x}");
        }
    }

    #[test]
    fn fold64_matches_fold() {
        for acc in [
            0u64,
            1,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_ffff_fffe,
            0x7_ffff_fff9,
            u64::MAX >> 1,
        ] {
            assert_eq!(fold64(acc), fold(acc), "{acc:#x}");
        }
    }

    #[test]
    fn ipv4_header_check_matches_verifies() {
        let mut h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verifies_ipv4_header(&h));
        for i in 0..20 {
            for b in [0u8, 1, 0x80, 0xff] {
                let old = h[i];
                h[i] = b;
                assert_eq!(verifies_ipv4_header(&h), verifies(0, &h), "byte {i} = {b}");
                h[i] = old;
            }
        }
        assert!(!verifies_ipv4_header(&[0; 20]));
        assert_eq!(verifies_ipv4_header(&[0xff; 20]), verifies(0, &[0xff; 20]));
    }

    #[test]
    fn udp_zero_is_sent_as_ffff() {
        assert_eq!(udp_fixup(0), 0xffff);
        assert_eq!(udp_fixup(0x1234), 0x1234);
    }
}
