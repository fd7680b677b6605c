//! SYN cookies (RFC 4987 §3.6), computed as Linux's `net/ipv4/syncookies.c` and
//! `net/ipv6/syncookies.c` do:
//!
//! ```text
//! cookie = H0(saddr, daddr, sport, dport, 0) + client_isn + (count << 24)
//!        + ((H1(saddr, daddr, sport, dport, count) + mss_index) & 0xffffff)
//! ```
//!
//! `H0`, `H1` are SipHash-2-4 under two keys taken from one secret; `count` is the minute
//! counter (`tcp_cookie_time`: minutes since an epoch, passed in). The check subtracts `H0` and
//! the client's ISN (the ACK's sequence number minus one), reads the count from the top 8 bits,
//! accepts it if it is 0 or 1 minute old (`MAX_SYNCOOKIE_AGE` = 2), and recovers the MSS index
//! from the low 24 bits, which must be one of the four table entries (`msstab`).
//!
//! What the 2 bits of MSS index cannot carry travels, as in Linux (`cookie_init_timestamp`), in
//! the low 6 bits of the director's timestamp when the client offered timestamps: the client's
//! window scale (4 bits, 15 = none), SACK permitted (bit 4) and ECN (bit 5); the client echoes
//! them in its ACK's TSecr. Without timestamps a cookie connection has neither window scaling
//! nor SACK (Linux's behaviour too).

use std::net::IpAddr;

use siphasher::sip::SipHasher24;
use std::hash::Hasher;

/// Bits of the cookie below the minute counter.
pub const COOKIEBITS: u32 = 24;
const COOKIEMASK: u32 = (1 << COOKIEBITS) - 1;
/// A cookie is accepted for this many minute counts (`MAX_SYNCOOKIE_AGE`).
pub const MAX_AGE: u32 = 2;
/// Option bits carried in the low bits of the timestamp (`TSBITS`).
pub const TSBITS: u32 = 6;
const TS_WSCALE_MASK: u32 = 0xf;
const TS_SACK: u32 = 1 << 4;
const TS_ECN: u32 = 1 << 5;

/// MSS values a cookie can carry (`msstab` of `syncookies.c`), IPv4.
pub const MSS_V4: [u16; 4] = [536, 1300, 1440, 1460];
/// IPv6 (`msstab` of `net/ipv6/syncookies.c`).
pub const MSS_V6: [u16; 4] = [1280 - 60, 1480 - 60, 1500 - 60, 9000 - 60];

/// The secret of the cookies (two SipHash keys). Make it random at start; cookies made under
/// one secret are rejected under another.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieSecret(pub [u64; 4]);

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(..)")
    }
}

/// The connection a cookie is bound to: client address and port, virtual address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieTuple {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

fn hash(secret: &CookieSecret, c: usize, t: &CookieTuple, count: u32) -> u32 {
    let (k0, k1) = (secret.0[2 * c], secret.0[2 * c + 1]);
    let mut h = SipHasher24::new_with_keys(k0, k1);
    match (t.saddr, t.daddr) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.write(&s.octets());
            h.write(&d.octets());
        }
        (s, d) => {
            h.write(&to16(s));
            h.write(&to16(d));
        }
    }
    h.write_u32(u32::from(t.sport) << 16 | u32::from(t.dport));
    h.write_u32(count);
    h.finish() as u32
}

fn to16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn table(t: &CookieTuple) -> &'static [u16; 4] {
    if t.saddr.is_ipv4() {
        &MSS_V4
    } else {
        &MSS_V6
    }
}

/// The cookie (the director's ISN) for a SYN with sequence number `client_isn` and MSS option
/// `mss` (536 when absent) at minute `count`; and the MSS the cookie carries (the largest table
/// value ≤ `mss`, or the smallest).
pub fn make(
    secret: &CookieSecret,
    t: &CookieTuple,
    client_isn: u32,
    mss: u16,
    count: u32,
) -> (u32, u16) {
    let tab = table(t);
    let mut ind = tab.len() - 1;
    while ind > 0 && mss < tab[ind] {
        ind -= 1;
    }
    let cookie = hash(secret, 0, t, 0)
        .wrapping_add(client_isn)
        .wrapping_add(count << COOKIEBITS)
        .wrapping_add(hash(secret, 1, t, count).wrapping_add(ind as u32) & COOKIEMASK);
    (cookie, tab[ind])
}

/// Check the cookie an ACK returns (`ack − 1`) with the ACK's `seq − 1` as `client_isn`, at
/// minute `count`. Returns the MSS it carries, or `None` for a cookie that is forged, older
/// than [`MAX_AGE`] minutes, or made for another tuple or secret.
pub fn check(
    secret: &CookieSecret,
    t: &CookieTuple,
    cookie: u32,
    client_isn: u32,
    count: u32,
) -> Option<u16> {
    let c = cookie
        .wrapping_sub(hash(secret, 0, t, 0))
        .wrapping_sub(client_isn);
    let diff = count.wrapping_sub(c >> COOKIEBITS) & (u32::MAX >> COOKIEBITS);
    if diff >= MAX_AGE {
        return None;
    }
    let ind = c.wrapping_sub(hash(secret, 1, t, count.wrapping_sub(diff))) & COOKIEMASK;
    table(t).get(ind as usize).copied()
}

/// The options a SYN offered that the timestamp carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TsOptions {
    /// The client's window scale shift (0..=14), `None` without the option.
    pub wscale: Option<u8>,
    pub sack: bool,
    pub ecn: bool,
}

/// The director's TSval in its SYN-ACK (`cookie_init_timestamp`): `now_ts` (a millisecond
/// clock) with its low 6 bits replaced by the options, never later than `now_ts`.
pub fn ts_make(now_ts: u32, o: TsOptions) -> u32 {
    let mut opts = o.wscale.map_or(TS_WSCALE_MASK, |w| u32::from(w.min(14)));
    if o.sack {
        opts |= TS_SACK;
    }
    if o.ecn {
        opts |= TS_ECN;
    }
    let mut ts = (now_ts >> TSBITS) << TSBITS | opts;
    if ts > now_ts {
        ts = ts.wrapping_sub(1 << TSBITS);
    }
    ts
}

/// The options a client's ACK echoes in its TSecr (`cookie_timestamp_decode`): window scale
/// 15 means none.
pub fn ts_decode(tsecr: u32) -> TsOptions {
    let w = tsecr & TS_WSCALE_MASK;
    TsOptions {
        wscale: (w != TS_WSCALE_MASK).then_some(w as u8),
        sack: tsecr & TS_SACK != 0,
        ecn: tsecr & TS_ECN != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const S: CookieSecret = CookieSecret([1, 2, 3, 4]);

    fn t4() -> CookieTuple {
        CookieTuple {
            saddr: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 5)),
            daddr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
            sport: 40000,
            dport: 80,
        }
    }

    #[test]
    fn round_trip_each_mss_and_age() {
        for (mss, want) in [
            (1460, 1460),
            (9000, 1460),
            (1400, 1300),
            (536, 536),
            (100, 536),
        ] {
            for age in 0..MAX_AGE {
                let (c, m) = make(&S, &t4(), 0xdead_beef, mss, 1000);
                assert_eq!(m, want);
                assert_eq!(check(&S, &t4(), c, 0xdead_beef, 1000 + age), Some(want));
            }
        }
    }

    #[test]
    fn stale_forged_other_tuple_other_secret_rejected() {
        let (c, _) = make(&S, &t4(), 7, 1460, 500);
        assert_eq!(check(&S, &t4(), c, 7, 500 + MAX_AGE), None, "stale");
        assert_eq!(check(&S, &t4(), c, 7, 499), None, "from the future");
        assert_eq!(check(&S, &t4(), c ^ 0x0100_0000, 7, 500), None);
        // Another client ISN (one that differs by 1..3 would only move the MSS index down, as
        // with Linux's cookies: 8 gives 1440).
        assert_eq!(
            check(&S, &t4(), c, 7 + 0x10000, 500),
            None,
            "other client ISN"
        );
        assert_eq!(check(&S, &t4(), c, 8, 500), Some(1440));
        let other = CookieTuple { dport: 443, ..t4() };
        assert_eq!(check(&S, &other, c, 7, 500), None, "other service");
        let other = CookieTuple {
            sport: 40001,
            ..t4()
        };
        assert_eq!(check(&S, &other, c, 7, 500), None, "other client port");
        assert_eq!(check(&CookieSecret([1, 2, 3, 5]), &t4(), c, 7, 500), None);
        // Random guesses: at most a few in 2^16 pass (4 of 2^24 index values in 2 minutes).
        let mut x = 0x1234_5678u32;
        let mut ok = 0;
        for _ in 0..65_536 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            if check(&S, &t4(), x, 7, 500).is_some() {
                ok += 1;
            }
        }
        assert!(ok <= 3, "{ok}");
    }

    #[test]
    fn ipv6_uses_its_table() {
        let t = CookieTuple {
            saddr: IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0xff, 0, 0, 0, 0, 5)),
            daddr: IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100)),
            sport: 1,
            dport: 443,
        };
        let (c, m) = make(&S, &t, 1, 1440, 3);
        assert_eq!(m, 1440);
        assert_eq!(check(&S, &t, c, 1, 4), Some(1440));
    }

    #[test]
    fn timestamp_carries_options() {
        let o = TsOptions {
            wscale: Some(7),
            sack: true,
            ecn: false,
        };
        let ts = ts_make(1_000_000, o);
        assert!(ts <= 1_000_000 && 1_000_000 - ts < 64);
        assert_eq!(ts_decode(ts), o);
        let none = TsOptions::default();
        assert_eq!(ts_decode(ts_make(12345, none)), none);
        assert_eq!(ts_decode(14).wscale, Some(14));
        assert_eq!(ts_decode(15).wscale, None);
    }
}
