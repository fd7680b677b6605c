//! The IPVS sync codec against datagrams assembled by hand from the kernel's structures
//! (`net/netfilter/ipvs/ip_vs_sync.c`: `struct ip_vs_sync_mesg`, `ip_vs_sync_v4`,
//! `ip_vs_sync_v6`, the options, `ip_vs_sync_mesg_v0` / `ip_vs_sync_conn_v0`):
//! * byte-exact fixtures in both directions (encode gives exactly these bytes, decode reads them):
//!   IPv4 TCP ESTABLISHED, IPv6 UDP, connection + fwmark template, sequence option with the
//!   padding before the next entry; decode only: persistence-engine options, version 0;
//! * every acceptance rule of the kernel's backup (`ip_vs_process_message`,
//!   `ip_vs_proc_sync_conn`, `ip_vs_proc_seqopt`, `ip_vs_proc_str`), one test each, and the
//!   entries before a bad one staying decoded;
//! * xvs messages: exact bytes, and the header conditions that make a kernel ignore them;
//! * proptest: decode(encode(x)) == x across `max_len` splits; arbitrary and mutated datagrams
//!   never panic, and whatever decodes re-encodes to the same entries.

use std::net::SocketAddr;

use proptest::prelude::*;
use xvs_forwarding::sync::{
    decode, encode_xvs, flags, DecodeError, Decoded, Encoder, SyncConn, XvsMessage,
};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn conn(proto: u8, fl: u32, state: u16, c: &str, v: &str, d: &str) -> SyncConn {
    SyncConn {
        protocol: proto,
        flags: fl,
        state,
        client: sa(c),
        virt: sa(v),
        dest: sa(d),
        fwmark: 0,
        timeout: None,
        seq: None,
        has_pe: false,
    }
}

fn decode_all(buf: &[u8], local: u8) -> (Result<Decoded, DecodeError>, Vec<SyncConn>) {
    let mut out = Vec::new();
    let r = decode(buf, local, &mut out);
    (r, out)
}

fn encode_one_message(syncid: u8, conns: &[SyncConn]) -> Vec<u8> {
    let mut e = Encoder::new(syncid, 1472);
    for c in conns {
        assert!(e.push(c));
    }
    e.finish()
}

fn v1(syncid: u8, count: u8) -> Result<Decoded, DecodeError> {
    Ok(Decoded::V1 {
        syncid,
        count,
        skipped: 0,
    })
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// syncid 7, one IPv4 TCP connection, direct routing, ESTABLISHED (1), 900 s.
#[rustfmt::skip]
const V4_TCP: [u8; 44] = [
    0x00, 0x07, 0x00, 0x2c, 0x01, 0x01, 0x00, 0x00, // reserved, syncid, size 44, 1 conn, v1, spare
    0x00, 0x06, 0x00, 0x24,                         // type v4, TCP, version 0 | size 36
    0x00, 0x00, 0x00, 0x03,                         // flags DROUTE
    0x00, 0x01, 0x9c, 0x40,                         // state 1, cport 40000
    0x00, 0x50, 0x00, 0x50,                         // vport 80, dport 80
    0x00, 0x00, 0x00, 0x00,                         // fwmark
    0x00, 0x00, 0x03, 0x84,                         // timeout 900
    198, 18, 0, 1, 198, 18, 1, 1, 198, 18, 2, 1,    // caddr, vaddr, daddr
];

fn v4_tcp() -> SyncConn {
    SyncConn {
        timeout: Some(900),
        ..conn(
            6,
            flags::DROUTE,
            1,
            "198.18.0.1:40000",
            "198.18.1.1:80",
            "198.18.2.1:80",
        )
    }
}

/// syncid 0, one IPv6 UDP connection, tunnel, state 0 (NORMAL), 300 s.
#[rustfmt::skip]
const V6_UDP: [u8; 80] = [
    0x00, 0x00, 0x00, 0x50, 0x01, 0x01, 0x00, 0x00, // size 80
    0x01, 0x11, 0x00, 0x48,                         // type v6, UDP, size 72
    0x00, 0x00, 0x00, 0x02,                         // flags TUNNEL
    0x00, 0x00, 0x14, 0xe9,                         // state 0, cport 5353
    0x00, 0x35, 0x00, 0x35,                         // vport 53, dport 53
    0x00, 0x00, 0x00, 0x00,                         // fwmark
    0x00, 0x00, 0x01, 0x2c,                         // timeout 300
    0x20, 0x01, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x05, // 2001:2::5
    0x20, 0x01, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, // 2001:2::100
    0x20, 0x01, 0x00, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x11, // 2001:2:1::11
];

fn v6_udp() -> SyncConn {
    SyncConn {
        timeout: Some(300),
        ..conn(
            17,
            flags::TUNNEL,
            0,
            "[2001:2::5]:5353",
            "[2001:2::100]:53",
            "[2001:2:1::11]:53",
        )
    }
}

/// syncid 1: a NAT connection of fwmark service 5, then its persistence template as the kernel
/// sends it (protocol IPPROTO_IP, client network /24 port 0, virtual = the mark as an address,
/// ports 0, TEMPLATE, persistence timeout 300 s).
#[rustfmt::skip]
const FWMARK_TEMPLATE: [u8; 80] = [
    0x00, 0x01, 0x00, 0x50, 0x02, 0x01, 0x00, 0x00, // size 80, 2 conns
    0x00, 0x06, 0x00, 0x24,                         // v4, TCP, 36
    0x00, 0x00, 0x00, 0x00,                         // flags MASQ
    0x00, 0x01, 0x9c, 0x41,                         // ESTABLISHED, cport 40001
    0x01, 0xbb, 0x01, 0xbb,                         // vport 443, dport 443
    0x00, 0x00, 0x00, 0x05,                         // fwmark 5
    0x00, 0x00, 0x03, 0x84,                         // 900 s
    198, 18, 0, 1, 198, 18, 1, 1, 198, 18, 2, 1,
    0x00, 0x00, 0x00, 0x24,                         // v4, IPPROTO_IP, 36
    0x00, 0x00, 0x10, 0x00,                         // flags TEMPLATE | MASQ
    0x00, 0x00, 0x00, 0x00,                         // state 0, cport 0
    0x00, 0x00, 0x00, 0x00,                         // vport 0, dport 0
    0x00, 0x00, 0x00, 0x05,                         // fwmark 5
    0x00, 0x00, 0x01, 0x2c,                         // 300 s
    198, 18, 0, 0, 0, 0, 0, 5, 198, 18, 2, 1,       // client net, mark 5 as address, daddr
];

fn fwmark_pair() -> [SyncConn; 2] {
    [
        SyncConn {
            fwmark: 5,
            timeout: Some(900),
            ..conn(
                6,
                flags::MASQ,
                1,
                "198.18.0.1:40001",
                "198.18.1.1:443",
                "198.18.2.1:443",
            )
        },
        SyncConn {
            fwmark: 5,
            timeout: Some(300),
            ..conn(
                0,
                flags::TEMPLATE,
                0,
                "198.18.0.0:0",
                "0.0.0.5:0",
                "198.18.2.1:0",
            )
        },
    ]
}

/// syncid 2: a NAT connection with sequence adjustment (the SEQ_DATA option, entry size 62),
/// 2 bytes of padding, then a plain connection.
#[rustfmt::skip]
const SEQ_OPTION: [u8; 108] = [
    0x00, 0x02, 0x00, 0x6c, 0x02, 0x01, 0x00, 0x00, // size 108, 2 conns
    0x00, 0x06, 0x00, 0x3e,                         // v4, TCP, size 62 (36 + 2 + 24)
    0x00, 0x00, 0x06, 0x00,                         // flags MASQ | OUT_SEQ | IN_SEQ
    0x00, 0x01, 0x9c, 0x42,                         // ESTABLISHED, cport 40002
    0x00, 0x15, 0x00, 0x15,                         // vport 21, dport 21
    0x00, 0x00, 0x00, 0x00,                         // fwmark
    0x00, 0x00, 0x03, 0x84,                         // 900 s
    198, 18, 0, 2, 198, 18, 1, 1, 198, 18, 2, 2,
    0x01, 0x18,                                     // IPVS_OPT_SEQ_DATA, 24 bytes
    0x11, 0x11, 0x11, 0x11, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x08, // in_seq
    0x22, 0x22, 0x22, 0x22, 0xff, 0xff, 0xff, 0xf0, 0x00, 0x00, 0x00, 0x00, // out_seq
    0x00, 0x00,                                     // padding to 4 bytes
    0x00, 0x06, 0x00, 0x24,                         // v4, TCP, 36
    0x00, 0x00, 0x01, 0x00,                         // flags MASQ | INACTIVE
    0x00, 0x02, 0x9c, 0x43,                         // SYN_SENT (2), cport 40003
    0x00, 0x50, 0x00, 0x50,
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x78,                         // 120 s
    198, 18, 0, 3, 198, 18, 1, 1, 198, 18, 2, 2,
];

fn seq_pair() -> [SyncConn; 2] {
    [
        SyncConn {
            timeout: Some(900),
            seq: Some([(0x1111_1111, 0x10, 8), (0x2222_2222, 0xffff_fff0, 0)]),
            ..conn(
                6,
                flags::SEQ_MASK,
                1,
                "198.18.0.2:40002",
                "198.18.1.1:21",
                "198.18.2.2:21",
            )
        },
        SyncConn {
            timeout: Some(120),
            ..conn(
                6,
                flags::INACTIVE,
                2,
                "198.18.0.3:40003",
                "198.18.1.1:80",
                "198.18.2.2:80",
            )
        },
    ]
}

/// syncid 3: a UDP connection with persistence-engine data (PE_DATA "abc", PE_NAME "sip",
/// entry size 46), padding, then a plain connection.
#[rustfmt::skip]
const PE_OPTIONS: [u8; 92] = [
    0x00, 0x03, 0x00, 0x5c, 0x02, 0x01, 0x00, 0x00, // size 92, 2 conns
    0x00, 0x11, 0x00, 0x2e,                         // v4, UDP, size 46 (36 + 5 + 5)
    0x00, 0x00, 0x00, 0x03,                         // DROUTE
    0x00, 0x00, 0x13, 0xc4,                         // state 0, cport 5060
    0x13, 0xc4, 0x13, 0xc4,                         // vport 5060, dport 5060
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x2c,                         // 300 s
    198, 18, 0, 4, 198, 18, 1, 1, 198, 18, 2, 3,
    0x02, 0x03, b'a', b'b', b'c',                   // IPVS_OPT_PE_DATA (call-id)
    0x03, 0x03, b's', b'i', b'p',                   // IPVS_OPT_PE_NAME
    0x00, 0x00,                                     // padding
    0x00, 0x06, 0x00, 0x24,
    0x00, 0x00, 0x00, 0x03,
    0x00, 0x01, 0x9c, 0x44,
    0x00, 0x50, 0x00, 0x50,
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x03, 0x84,
    198, 18, 0, 5, 198, 18, 1, 1, 198, 18, 2, 3,
];

/// Version 0, syncid 3: a DR connection, then a NAT connection with sequence data (24 bytes in
/// the master's byte order; built here in this host's order, as a kernel master on this
/// machine writes it).
fn v0_message() -> Vec<u8> {
    let mut m = vec![0x02, 0x03, 0x00, 0x4c]; // 2 conns, syncid 3, size 76
    #[rustfmt::skip]
    m.extend_from_slice(&[
        0x00, 0x06, 0x9c, 0x40, 0x00, 0x50, 0x00, 0x50, // reserved, TCP, cport, vport, dport
        198, 18, 0, 1, 198, 18, 1, 1, 198, 18, 2, 1,    // caddr, vaddr, daddr
        0x00, 0x03, 0x00, 0x01,                         // flags (u16) DROUTE, state 1
        0x00, 0x06, 0x9c, 0x41, 0x00, 0x15, 0x00, 0x15,
        198, 18, 0, 2, 198, 18, 1, 1, 198, 18, 2, 2,
        0x06, 0x00, 0x00, 0x01,                         // flags MASQ | SEQ, state 1
    ]);
    for v in [100u32, 4, 0, 200, 0xffff_fffc, 0] {
        m.extend_from_slice(&v.to_ne_bytes());
    }
    assert_eq!(m.len(), 76);
    m
}

// ---------------------------------------------------------------------------------------------
// Byte-exact, both directions

#[test]
fn v4_tcp_established_both_directions() {
    assert_eq!(encode_one_message(7, &[v4_tcp()]), V4_TCP);
    let (r, out) = decode_all(&V4_TCP, 7);
    assert_eq!(r, v1(7, 1));
    assert_eq!(out, [v4_tcp()]);
}

#[test]
fn v6_udp_both_directions() {
    assert_eq!(encode_one_message(0, &[v6_udp()]), V6_UDP);
    let (r, out) = decode_all(&V6_UDP, 0);
    assert_eq!(r, v1(0, 1));
    assert_eq!(out, [v6_udp()]);
}

#[test]
fn fwmark_template_both_directions() {
    assert_eq!(encode_one_message(1, &fwmark_pair()), FWMARK_TEMPLATE);
    let (r, out) = decode_all(&FWMARK_TEMPLATE, 1);
    assert_eq!(r, v1(1, 2));
    assert_eq!(out, fwmark_pair());
}

#[test]
fn seq_option_and_padding_both_directions() {
    assert_eq!(encode_one_message(2, &seq_pair()), SEQ_OPTION);
    let (r, out) = decode_all(&SEQ_OPTION, 2);
    assert_eq!(r, v1(2, 2));
    assert_eq!(out, seq_pair());
}

#[test]
fn last_entry_is_not_padded() {
    // The sequence entry last: 8 + 36 + 62, no trailing padding (the kernel pads before an entry).
    let [seq, plain] = seq_pair();
    let m = encode_one_message(2, &[plain, seq]);
    assert_eq!(m.len(), 106);
    assert_eq!(&m[2..4], &[0, 106]);
    let (r, out) = decode_all(&m, 2);
    assert_eq!(r, v1(2, 2));
    assert_eq!(out, [plain, seq]);
}

#[test]
fn pe_options_are_read_and_flagged() {
    let (r, out) = decode_all(&PE_OPTIONS, 3);
    assert_eq!(r, v1(3, 2));
    let sip = SyncConn {
        timeout: Some(300),
        has_pe: true,
        ..conn(
            17,
            flags::DROUTE,
            0,
            "198.18.0.4:5060",
            "198.18.1.1:5060",
            "198.18.2.3:5060",
        )
    };
    let next = SyncConn {
        timeout: Some(900),
        ..conn(
            6,
            flags::DROUTE,
            1,
            "198.18.0.5:40004",
            "198.18.1.1:80",
            "198.18.2.3:80",
        )
    };
    assert_eq!(out, [sip, next]);
}

#[test]
fn pe_name_alone_is_ignored_like_the_kernel() {
    // Only PE_DATA makes the kernel look for an engine; a lone PE_NAME changes nothing.
    let mut m = PE_OPTIONS.to_vec();
    m[8 + 36] = 0x45; // PE_DATA becomes an unknown optional option; PE_NAME stays
    let (r, out) = decode_all(&m, 3);
    assert_eq!(r, v1(3, 2));
    assert!(!out[0].has_pe);
}

#[test]
fn v0_message_decodes() {
    let m = v0_message();
    let (r, out) = decode_all(&m, 3);
    assert_eq!(
        r,
        Ok(Decoded::V0 {
            syncid: 3,
            count: 2
        })
    );
    assert_eq!(
        out,
        [
            conn(
                6,
                flags::DROUTE,
                1,
                "198.18.0.1:40000",
                "198.18.1.1:80",
                "198.18.2.1:80"
            ),
            SyncConn {
                seq: Some([(100, 4, 0), (200, 0xffff_fffc, 0)]),
                ..conn(
                    6,
                    flags::SEQ_MASK,
                    1,
                    "198.18.0.2:40001",
                    "198.18.1.1:21",
                    "198.18.2.2:21"
                )
            },
        ]
    );
}

#[test]
fn v1_timeout_zero_reads_as_none() {
    let mut m = V4_TCP;
    m[28..32].copy_from_slice(&[0, 0, 0, 0]);
    let (_, out) = decode_all(&m, 7);
    assert_eq!(out[0].timeout, None);
    // …and None is sent as 0.
    let c = SyncConn {
        timeout: None,
        ..v4_tcp()
    };
    assert_eq!(encode_one_message(7, &[c]), m);
}

#[test]
fn type_with_the_ipv6_bit_and_others_is_ipv6() {
    // ip_vs_proc_sync_conn tests the IPv6 bit first; other bits only matter without it.
    let mut m = V6_UDP;
    m[8] = 0x03;
    let (r, out) = decode_all(&m, 0);
    assert_eq!(r, v1(0, 1));
    assert_eq!(out, [v6_udp()]);
}

#[test]
fn trailing_bytes_after_the_last_entry_are_ignored() {
    let mut m = V4_TCP.to_vec();
    m.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    m[3] = 48;
    let (r, out) = decode_all(&m, 7);
    assert_eq!(r, v1(7, 1));
    assert_eq!(out, [v4_tcp()]);
}

// ---------------------------------------------------------------------------------------------
// Acceptance rules, one each

#[test]
fn reject_header_too_short() {
    for len in 0..4 {
        assert_eq!(decode_all(&V4_TCP[..len], 0).0, Err(DecodeError::TooShort));
    }
}

#[test]
fn reject_size_field_not_length() {
    let mut m = V4_TCP;
    m[3] = 45;
    assert_eq!(decode_all(&m, 7).0, Err(DecodeError::SizeMismatch));
    let mut longer = V4_TCP.to_vec();
    longer.push(0);
    assert_eq!(decode_all(&longer, 7).0, Err(DecodeError::SizeMismatch));
    assert_eq!(
        decode_all(&V4_TCP[..40], 7).0,
        Err(DecodeError::SizeMismatch)
    );
}

#[test]
fn reject_foreign_syncid_unless_local_is_zero() {
    assert_eq!(
        decode_all(&V4_TCP, 8),
        (Err(DecodeError::ForeignSyncid), vec![])
    );
    assert_eq!(decode_all(&V4_TCP, 0).0, v1(7, 1));
    assert_eq!(decode_all(&V4_TCP, 7).0, v1(7, 1));
}

#[test]
fn reject_count_beyond_the_entries_and_keep_the_ones_before() {
    let mut m = V4_TCP;
    m[4] = 2;
    let (r, out) = decode_all(&m, 7);
    assert_eq!(r, Err(DecodeError::EntryTooShort));
    assert_eq!(out, [v4_tcp()]);
}

#[test]
fn reject_fewer_than_36_bytes_for_an_entry() {
    let mut m = V4_TCP[..40].to_vec();
    m[3] = 40;
    assert_eq!(decode_all(&m, 7), (Err(DecodeError::EntryTooShort), vec![]));
}

#[test]
fn reject_entry_overrunning_the_datagram() {
    let mut m = V4_TCP;
    m[11] = 0x28; // size 40 > 36 bytes left
    assert_eq!(decode_all(&m, 7), (Err(DecodeError::EntryOverrun), vec![]));
}

#[test]
fn reject_entry_version_not_zero() {
    let mut m = V4_TCP;
    m[10] = 0x10; // version 1, size 36
    assert_eq!(
        decode_all(&m, 7),
        (Err(DecodeError::EntryVersion(1)), vec![])
    );
}

#[test]
fn reject_unknown_entry_type() {
    let mut m = V4_TCP;
    m[8] = 0x02;
    assert_eq!(decode_all(&m, 7), (Err(DecodeError::EntryType(2)), vec![]));
}

#[test]
fn reject_entry_size_below_the_fixed_part() {
    let mut m = V4_TCP;
    m[11] = 0x20; // 32 < 36
    assert_eq!(decode_all(&m, 7).0, Err(DecodeError::EntrySize));
    // An IPv6 entry that claims 36 bytes.
    let mut m = V4_TCP;
    m[8] = 0x01;
    assert_eq!(decode_all(&m, 7).0, Err(DecodeError::EntrySize));
}

/// V4_TCP with `opts` appended to its only entry (entry size and message size adjusted).
fn with_options(opts: &[u8]) -> Vec<u8> {
    let mut m = V4_TCP.to_vec();
    m.extend_from_slice(opts);
    let entry = 36 + opts.len();
    m[10..12].copy_from_slice(&(entry as u16).to_be_bytes());
    let len = m.len() as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

fn seq_opt(ty: u8) -> Vec<u8> {
    let mut o = vec![ty, 24];
    o.extend_from_slice(&[0x11; 24]);
    o
}

#[test]
fn reject_option_header_truncated() {
    assert_eq!(
        decode_all(&with_options(&[0x01]), 7).0,
        Err(DecodeError::OptionTruncated)
    );
}

#[test]
fn reject_option_of_length_zero_or_past_the_entry() {
    assert_eq!(
        decode_all(&with_options(&[0x45, 0]), 7).0,
        Err(DecodeError::OptionLength)
    );
    assert_eq!(
        decode_all(&with_options(&[0x45, 3, 1, 2]), 7).0,
        Err(DecodeError::OptionLength)
    );
}

#[test]
fn reject_seq_option_not_24_bytes() {
    let mut o = vec![0x01, 12];
    o.extend_from_slice(&[0; 12]);
    assert_eq!(
        decode_all(&with_options(&o), 7).0,
        Err(DecodeError::SeqOptionLength)
    );
}

#[test]
fn reject_duplicate_options() {
    let mut o = seq_opt(0x01);
    o.extend(seq_opt(0x41)); // the optional bit does not make it another option
    assert_eq!(
        decode_all(&with_options(&o), 7).0,
        Err(DecodeError::DuplicateOption(1))
    );
    let o = [0x02, 1, b'x', 0x02, 1, b'y'];
    assert_eq!(
        decode_all(&with_options(&o), 7).0,
        Err(DecodeError::DuplicateOption(2))
    );
    let o = [0x03, 1, b'x', 0x03, 1, b'y'];
    assert_eq!(
        decode_all(&with_options(&o), 7).0,
        Err(DecodeError::DuplicateOption(3))
    );
}

#[test]
fn reject_pe_name_longer_than_16() {
    let mut o = vec![0x03, 17];
    o.extend_from_slice(&[b'n'; 17]);
    assert_eq!(
        decode_all(&with_options(&o), 7).0,
        Err(DecodeError::PeNameLength)
    );
    let mut o = vec![0x03, 16];
    o.extend_from_slice(&[b'n'; 16]);
    assert_eq!(decode_all(&with_options(&o), 7).0, v1(7, 1));
}

#[test]
fn seq_option_with_the_optional_bit_is_read() {
    let (r, out) = decode_all(&with_options(&seq_opt(0x41)), 7);
    assert_eq!(r, v1(7, 1));
    assert_eq!(
        out[0].seq,
        Some([(0x1111_1111, 0x1111_1111, 0x1111_1111); 2])
    );
}

#[test]
fn unknown_optional_option_is_ignored() {
    let (r, out) = decode_all(&with_options(&[0x47, 2, 9, 9]), 7);
    assert_eq!(r, v1(7, 1));
    assert_eq!(out, [v4_tcp()]);
}

#[test]
fn unknown_mandatory_option_skips_only_its_entry() {
    // First entry of SEQ_OPTION gets option type 7 (unknown, mandatory): the kernel skips it
    // ("Unknown mandatory param", retc 20 > 0) and goes on with the next entry.
    let mut m = SEQ_OPTION;
    m[44] = 0x07;
    let (r, out) = decode_all(&m, 2);
    assert_eq!(
        r,
        Ok(Decoded::V1 {
            syncid: 2,
            count: 2,
            skipped: 1
        })
    );
    assert_eq!(out, [seq_pair()[1]]);
    // It stops reading that entry's options at once: a bad option after it is not seen.
    let mut o = vec![0x07, 1, 0, 0x01, 12];
    o.extend_from_slice(&[0; 12]);
    let (r, out) = decode_all(&with_options(&o), 7);
    assert_eq!(
        r,
        Ok(Decoded::V1 {
            syncid: 7,
            count: 1,
            skipped: 1
        })
    );
    assert!(out.is_empty());
}

#[test]
fn bad_second_entry_keeps_the_first() {
    let mut m = SEQ_OPTION;
    m[72] = 0x04; // second entry's type: unknown
    let (r, out) = decode_all(&m, 2);
    assert_eq!(r, Err(DecodeError::EntryType(4)));
    assert_eq!(out, [seq_pair()[0]]);
}

#[test]
fn reject_v0_entry_truncated() {
    let mut m = v0_message();
    m[0] = 3;
    let (r, out) = decode_all(&m, 3);
    assert_eq!(r, Err(DecodeError::V0EntryTruncated));
    assert_eq!(out.len(), 2);
}

#[test]
fn reject_v0_seq_data_truncated() {
    let mut m = v0_message();
    m.truncate(4 + 24 + 24 + 10);
    m[3] = m.len() as u8;
    let (r, out) = decode_all(&m, 3);
    assert_eq!(r, Err(DecodeError::V0SeqTruncated));
    assert_eq!(out.len(), 1);
}

#[test]
fn v1_lookalike_with_spare_set_is_version_0() {
    // ip_vs_process_message wants reserved 0, version 1 and spare 0 for version 1; else v0,
    // where byte 0 (0 here) counts the entries.
    let mut m = V4_TCP;
    m[7] = 1;
    assert_eq!(
        decode_all(&m, 7),
        (
            Ok(Decoded::V0 {
                syncid: 7,
                count: 0
            }),
            vec![]
        )
    );
}

// ---------------------------------------------------------------------------------------------
// xvs messages

#[rustfmt::skip]
const BULK_REQUEST: [u8; 24] = [
    0x00, 0x09, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, // v0 nr_conns 0, syncid 9, size 24, version 0
    b'X', b'V', b'S', 0x01, 0x01, 0x00, 0x00, 0x00, // magic, extension version 1, type 1
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // node
];

#[rustfmt::skip]
const BULK_DONE: [u8; 28] = [
    0x00, 0x09, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00,
    b'X', b'V', b'S', 0x01, 0x02, 0x00, 0x00, 0x00,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x00, 0x00, 0x03, 0xe8,                         // 1000 entries
];

#[test]
fn xvs_messages_both_directions() {
    let req = XvsMessage::BulkRequest {
        node: 0x0102_0304_0506_0708,
    };
    let done = XvsMessage::BulkDone {
        node: 0x0102_0304_0506_0708,
        entries: 1000,
    };
    assert_eq!(encode_xvs(9, &req), BULK_REQUEST);
    assert_eq!(encode_xvs(9, &done), BULK_DONE);
    assert_eq!(
        decode_all(&BULK_REQUEST, 9),
        (
            Ok(Decoded::Xvs {
                syncid: 9,
                msg: req
            }),
            vec![]
        )
    );
    assert_eq!(
        decode_all(&BULK_DONE, 0),
        (
            Ok(Decoded::Xvs {
                syncid: 9,
                msg: done
            }),
            vec![]
        )
    );
    assert_eq!(decode_all(&BULK_DONE, 8).0, Err(DecodeError::ForeignSyncid));
}

#[test]
fn xvs_messages_are_a_no_op_for_a_kernel_backup() {
    for m in [&BULK_REQUEST[..], &BULK_DONE[..]] {
        // ip_vs_process_message: ≥ 4 bytes and size == length, so not dropped as bogus…
        assert!(m.len() >= 4);
        assert_eq!(usize::from(u16::from_be_bytes([m[2], m[3]])), m.len());
        // …not version 1 (needs version byte 1)…
        assert_ne!(m[5], 1);
        // …so ip_vs_process_message_v0, whose loop runs nr_conns = byte 0 = 0 times.
        assert_eq!(m[0], 0);
    }
}

#[test]
fn reject_unknown_xvs_version_type_and_length() {
    let mut m = BULK_REQUEST;
    m[11] = 2;
    assert_eq!(decode_all(&m, 9).0, Err(DecodeError::XvsVersion(2)));
    let mut m = BULK_REQUEST;
    m[12] = 0x7f;
    assert_eq!(decode_all(&m, 9).0, Err(DecodeError::XvsType(0x7f)));
    let mut m = BULK_DONE;
    m[12] = 1; // a request must be 24 bytes
    assert_eq!(decode_all(&m, 9).0, Err(DecodeError::XvsLength));
    let mut m = BULK_REQUEST[..14].to_vec();
    m[3] = 14;
    assert_eq!(decode_all(&m, 9).0, Err(DecodeError::XvsLength));
}

// ---------------------------------------------------------------------------------------------
// Properties

fn arb_conn() -> impl Strategy<Value = SyncConn> {
    let v4 = (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<[u8; 4]>())
        .prop_map(|(a, b, c)| [a.into(), b.into(), c.into()].map(std::net::IpAddr::V4));
    let v6 = (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<[u8; 16]>())
        .prop_map(|(a, b, c)| [a.into(), b.into(), c.into()].map(std::net::IpAddr::V6));
    let seq = proptest::option::of(any::<[(u32, u32, u32); 2]>());
    let timeout = prop_oneof![Just(None), (1..=u32::MAX).prop_map(Some)];
    (
        prop_oneof![v4, v6],
        any::<[u16; 3]>(),
        any::<u8>(),
        any::<u32>(),
        any::<u16>(),
        any::<u32>(),
        timeout,
        seq,
    )
        .prop_map(
            |(ips, ports, protocol, fl, state, fwmark, timeout, seq)| SyncConn {
                protocol,
                flags: fl & !flags::HASHED,
                state,
                client: SocketAddr::new(ips[0], ports[0]),
                virt: SocketAddr::new(ips[1], ports[1]),
                dest: SocketAddr::new(ips[2], ports[2]),
                fwmark,
                timeout,
                seq,
                has_pe: false,
            },
        )
}

/// Encodes `conns` into as many messages as `max_len` needs (the sender's loop).
fn encode_all(syncid: u8, max_len: usize, conns: &[SyncConn]) -> Vec<Vec<u8>> {
    let mut e = Encoder::new(syncid, max_len);
    let mut msgs = Vec::new();
    for c in conns {
        if !e.push(c) {
            assert!(
                !e.is_empty(),
                "an empty encoder takes any same-family entry"
            );
            msgs.push(e.finish());
            assert!(e.push(c));
        }
    }
    if !e.is_empty() {
        msgs.push(e.finish());
    }
    msgs
}

/// What an entry becomes after a trip through [`Encoder`]: HASHED cleared, no PE data.
fn as_encoded(c: &SyncConn) -> SyncConn {
    SyncConn {
        flags: c.flags & !flags::HASHED,
        has_pe: false,
        ..*c
    }
}

/// Whatever `buf` decodes to: the count invariants, and re-encoding the entries gives them back.
fn check_decoded(buf: &[u8], local: u8) {
    let mut out = Vec::new();
    let r = decode(buf, local, &mut out);
    match r {
        Ok(Decoded::V1 { count, skipped, .. }) => {
            assert_eq!(out.len() + usize::from(skipped), usize::from(count))
        }
        Ok(Decoded::V0 { count, .. }) => assert_eq!(out.len(), usize::from(count)),
        Ok(Decoded::Xvs { .. }) => assert!(out.is_empty()),
        Err(_) => assert!(out.len() < 256),
    }
    let expected: Vec<SyncConn> = out.iter().map(as_encoded).collect();
    let mut again = Vec::new();
    for m in encode_all(1, 1472, &out) {
        assert!(matches!(
            decode(&m, 1, &mut again),
            Ok(Decoded::V1 { skipped: 0, .. })
        ));
    }
    assert_eq!(again, expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_inverts_encode(
        conns in proptest::collection::vec(arb_conn(), 0..400),
        max_len in 0usize..3000,
        syncid in any::<u8>(),
    ) {
        let msgs = encode_all(syncid, max_len, &conns);
        let mut got = Vec::new();
        for m in &msgs {
            let before = got.len();
            let r = decode(m, syncid, &mut got);
            let n = got.len() - before;
            prop_assert_eq!(r, Ok(Decoded::V1 { syncid, count: n as u8, skipped: 0 }));
            prop_assert!(m.len() <= max_len || n == 1, "len {} max {} n {}", m.len(), max_len, n);
            prop_assert!(n <= 255);
        }
        prop_assert_eq!(got, conns);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..600),
        fix_size in any::<bool>(),
        v1_header in any::<bool>(),
        local in prop_oneof![Just(0u8), any::<u8>()],
    ) {
        if bytes.len() >= 8 && v1_header {
            bytes[0] = 0;
            bytes[5] = 1;
            bytes[6] = 0;
            bytes[7] = 0;
        }
        if fix_size && bytes.len() >= 4 {
            let n = bytes.len() as u16;
            bytes[2..4].copy_from_slice(&n.to_be_bytes());
        }
        check_decoded(&bytes, local);
    }

    #[test]
    fn mutated_messages_never_panic(
        conns in proptest::collection::vec(arb_conn(), 1..12),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut m = encode_all(0, 1472, &conns).remove(0);
        for (at, byte, op) in edits {
            if m.is_empty() {
                break;
            }
            let i = at.index(m.len());
            match op {
                0 => m[i] = byte,
                1 => m.truncate(i),
                2 => m.insert(i, byte),
                _ => { m.remove(i); }
            }
        }
        if m.len() >= 4 {
            let n = m.len() as u16;
            m[2..4].copy_from_slice(&n.to_be_bytes());
        }
        check_decoded(&m, 0);
    }
}
