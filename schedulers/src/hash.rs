//! Hash primitives that must match the kernel (and Katran) bit for bit.
//!
//! * [`hash_32`]: `include/linux/hash.h`, multiplicative hashing with `GOLDEN_RATIO_32`
//!   (0x61C88647), used by the sh, dh, lblc and lblcr schedulers of Linux 6.x.
//! * [`fold`]: how IPVS turns an address into 32 bits (`addr->ip`, or the XOR of the four words
//!   of an IPv6 address), already converted with `ntohl`.
//! * [`hsiphash`]: `lib/siphash.c` on a 64-bit kernel, where "HalfSipHash-1-3" is really
//!   SipHash-1-3 on 64-bit words with the result truncated to 32 bits (used by mh).
//! * [`murmur3_x64_64`]: Katran's `MurmurHash3_x64_64(A, B, seed)` (`katran/lib/MurmurHash3.cpp`),
//!   a two-word MurmurHash3 x64 variant, used for Maglev permutations.
//! * [`jhash_2words`] / [`jhash_words`]: Bob Jenkins' lookup3 as in `include/linux/jhash.h`,
//!   which Katran's data plane uses to hash a flow onto its Maglev ring.

use std::net::IpAddr;

/// `GOLDEN_RATIO_32` from `include/linux/hash.h`.
pub const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// `hash_32(val, bits)`: the top `bits` bits of `val * GOLDEN_RATIO_32` (mod 2^32).
/// `bits` is clamped to 1..=32 so that no input can make the shift overflow.
#[inline]
pub const fn hash_32(val: u32, bits: u32) -> u32 {
    let bits = if bits == 0 {
        1
    } else if bits > 32 {
        32
    } else {
        bits
    };
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// IPVS address folding, in host order (`ntohl` applied): the IPv4 address itself, or the XOR of
/// the four 32-bit words of an IPv6 address.
#[inline]
pub fn fold(addr: &IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from_be_bytes(a.octets()),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    }
}

/// A `hsiphash_key_t` of a 64-bit kernel: two 64-bit words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SipKey(pub u64, pub u64);

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-1-3 over `data` with `key`, full 64-bit result (the kernel's 64-bit `hsiphash`
/// before truncation).
pub fn siphash13(data: &[u8], key: SipKey) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ key.0,
        0x646f_7261_6e64_6f6d ^ key.1,
        0x6c79_6765_6e65_7261 ^ key.0,
        0x7465_6462_7974_6573 ^ key.1,
    ];
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let m = u64::from_le_bytes(w);
        v[3] ^= m;
        sipround(&mut v);
        v[0] ^= m;
    }
    let mut b = (data.len() as u64) << 56;
    for (i, byte) in chunks.remainder().iter().enumerate() {
        b |= u64::from(*byte) << (8 * i);
    }
    v[3] ^= b;
    sipround(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The kernel's `hsiphash(&v, sizeof(u32), key)` on a 64-bit little-endian machine.
#[inline]
pub fn hsiphash_u32(v: u32, key: SipKey) -> u32 {
    siphash13(&v.to_le_bytes(), key) as u32
}

/// Katran's `MurmurHash3_x64_64(A, B, seed)`.
pub fn murmur3_x64_64(a: u64, b: u64, seed: u32) -> u64 {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);

    let k1 = a.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    h1 ^= k1;
    h1 = h1.rotate_left(27).wrapping_add(h2);
    h1 = h1.wrapping_mul(5).wrapping_add(0x52dc_e729);

    let k2 = b.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    h2 ^= k2;
    h2 = h2.rotate_left(31).wrapping_add(h1);
    h2 = h2.wrapping_mul(5).wrapping_add(0x3849_5ab5);

    h1 ^= 16;
    h2 ^= 16;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1.wrapping_add(h2)
}

#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// `JHASH_INITVAL` from `include/linux/jhash.h`.
pub const JHASH_INITVAL: u32 = 0xdead_beef;

#[inline(always)]
fn jhash_final(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

#[inline(always)]
fn jhash_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// `jhash_2words(a, b, initval)` (`__jhash_nwords(a, b, 0, initval + JHASH_INITVAL + (2 << 2))`).
#[inline]
pub fn jhash_2words(a: u32, b: u32, initval: u32) -> u32 {
    let iv = initval.wrapping_add(JHASH_INITVAL).wrapping_add(2 << 2);
    jhash_final(a.wrapping_add(iv), b.wrapping_add(iv), iv)
}

/// `jhash2(words, len, initval)`: lookup3 over 32-bit words.
pub fn jhash_words(k: &[u32], initval: u32) -> u32 {
    let iv = JHASH_INITVAL
        .wrapping_add((k.len() as u32).wrapping_shl(2))
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (iv, iv, iv);
    let mut rest = k;
    while rest.len() > 3 {
        a = a.wrapping_add(rest[0]);
        b = b.wrapping_add(rest[1]);
        c = c.wrapping_add(rest[2]);
        jhash_mix(&mut a, &mut b, &mut c);
        rest = &rest[3..];
    }
    match rest.len() {
        3 => {
            c = c.wrapping_add(rest[2]);
            b = b.wrapping_add(rest[1]);
            a = a.wrapping_add(rest[0]);
            jhash_final(a, b, c)
        }
        2 => {
            b = b.wrapping_add(rest[1]);
            a = a.wrapping_add(rest[0]);
            jhash_final(a, b, c)
        }
        1 => {
            a = a.wrapping_add(rest[0]);
            jhash_final(a, b, c)
        }
        _ => c,
    }
}

/// `jhash(key, length, initval)`: lookup3 `hashlittle` over bytes, words read little-endian
/// (`__get_unaligned_cpu32` on x86).
pub fn jhash_bytes(key: &[u8], initval: u32) -> u32 {
    let iv = JHASH_INITVAL
        .wrapping_add(key.len() as u32)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (iv, iv, iv);
    let le = |k: &[u8]| u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(le(&rest[0..]));
        b = b.wrapping_add(le(&rest[4..]));
        c = c.wrapping_add(le(&rest[8..]));
        jhash_mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    // The byte-wise tail adds equal adding little-endian words of the zero-padded tail.
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(le(&tail[0..]));
    b = b.wrapping_add(le(&tail[4..]));
    c = c.wrapping_add(le(&tail[8..]));
    jhash_final(a, b, c)
}

/// Greatest common divisor (Euclid), `gcd(0, x) = x`.
pub(crate) const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// `fls(x)`: 1-based index of the most significant set bit, 0 for 0.
pub(crate) const fn fls(x: u64) -> u32 {
    64 - x.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const HASH1: SipKey = SipKey(2_654_435_761, 2_654_435_761);
    const HASH2: SipKey = SipKey(2_654_446_892, 2_654_446_892);

    #[test]
    fn hsiphash_vectors_from_ipvs_md() {
        assert_eq!(siphash13(&0u32.to_le_bytes(), HASH1), 0x5c36_1353_1d5a_77c2);
        assert_eq!(hsiphash_u32(0, HASH1), 0x1d5a_77c2);
        assert_eq!(hsiphash_u32(0, HASH2), 0xf882_433f);
        // dest 10.0.0.1:80 -> v = 0x0a000001 + 80
        assert_eq!(hsiphash_u32(0x0a00_0051, HASH1), 0x439c_0cbe);
        assert_eq!(hsiphash_u32(0x0a00_0051, HASH2), 0x97b3_dc47);
    }

    #[test]
    fn hash_32_vector() {
        assert_eq!(hash_32(0xc0a8_0001, 8), 192);
        assert_eq!(hash_32(0, 8), 0);
        assert_eq!(hash_32(1, 32), GOLDEN_RATIO_32);
        // Out-of-range bit counts are clamped instead of panicking.
        assert_eq!(hash_32(1, 0), GOLDEN_RATIO_32 >> 31);
        assert_eq!(hash_32(1, 99), GOLDEN_RATIO_32);
    }

    #[test]
    fn fold_v4_and_v6() {
        assert_eq!(
            fold(&IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))),
            0xc0a8_0001
        );
        let v6: Ipv6Addr = "2001:db8::1:0:0:5".parse().unwrap();
        assert_eq!(
            fold(&IpAddr::V6(v6)),
            0x2001_0db8 ^ 0x0001_0000 ^ 0x0000_0005
        );
    }

    #[test]
    fn jhash_known_values() {
        // jhash of zero words is the initval chain: JHASH_INITVAL + 0 + initval.
        assert_eq!(jhash_words(&[], 0), JHASH_INITVAL);
        // jhash_2words is __jhash_nwords with c = 0: equal to jhash2 over the two words, whose
        // initial value is the same (JHASH_INITVAL + 8 + initval) and whose tail adds a, b.
        for (a, b, iv) in [(1u32, 2u32, 3u32), (0xdead, 0xbeef, 33_554_944), (0, 0, 0)] {
            assert_eq!(jhash_2words(a, b, iv), jhash_words(&[a, b], iv));
        }
    }

    #[test]
    fn jhash_matches_lookup3_reference() {
        // Bob Jenkins' lookup3.c driver5(): hashlittle("", 0, 0) = 0xdeadbeef and
        // hashlittle("Four score and seven years ago", 30, 0 / 1) = 0x17770551 / 0xcd628161.
        assert_eq!(jhash_bytes(b"", 0), 0xdead_beef);
        assert_eq!(
            jhash_bytes(b"Four score and seven years ago", 0),
            0x1777_0551
        );
        assert_eq!(
            jhash_bytes(b"Four score and seven years ago", 1),
            0xcd62_8161
        );
        // On whole words, jhash over bytes equals jhash2 over the little-endian words.
        let bytes: Vec<u8> = (1..=16).collect();
        let words: Vec<u32> = bytes
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(jhash_bytes(&bytes, 512), jhash_words(&words, 512));
    }

    #[test]
    fn gcd_and_fls() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(0, 7), 7);
        assert_eq!(fls(0), 0);
        assert_eq!(fls(1), 1);
        assert_eq!(fls(64), 7);
    }
}
