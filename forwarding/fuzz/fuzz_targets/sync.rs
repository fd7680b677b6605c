//! Fuzz the IPVS sync decoder (`xvs_forwarding::sync::decode`): the input is one datagram, decoded
//! once accepting any sync id and once for sync id 1. Invariants: no panic; the entry counts
//! agree with the header (`count - skipped` entries for version 1, `count` for version 0, none
//! for xvs messages, fewer than 256 on an error); and whatever entries came out (version 1 or 0,
//! complete or cut short by an error) re-encode into version-1 messages that decode to the same
//! entries (HASHED cleared and no persistence-engine data, as the encoder sends them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xvs_forwarding::sync::{decode, flags, Decoded, Encoder, SyncConn};

fuzz_target!(|data: &[u8]| {
    for local in [0u8, 1] {
        let mut out = Vec::new();
        match decode(data, local, &mut out) {
            Ok(Decoded::V1 { count, skipped, .. }) => {
                assert_eq!(out.len() + usize::from(skipped), usize::from(count))
            }
            Ok(Decoded::V0 { count, .. }) => assert_eq!(out.len(), usize::from(count)),
            Ok(Decoded::Xvs { .. }) => assert!(out.is_empty()),
            Err(e) => {
                assert!(out.len() < 256);
                assert!(!e.name().is_empty());
            }
        }
        let expected: Vec<SyncConn> = out
            .iter()
            .map(|c| SyncConn {
                flags: c.flags & !flags::HASHED,
                has_pe: false,
                ..*c
            })
            .collect();
        let mut enc = Encoder::new(7, 1472);
        let mut again = Vec::new();
        let check = |m: Vec<u8>, again: &mut Vec<SyncConn>| {
            let r = decode(&m, 7, again);
            assert!(
                matches!(
                    r,
                    Ok(Decoded::V1 {
                        syncid: 7,
                        skipped: 0,
                        ..
                    })
                ),
                "{r:?}"
            );
        };
        for c in &out {
            if !enc.push(c) {
                assert!(!enc.is_empty(), "decoded entries have one family");
                check(enc.finish(), &mut again);
                assert!(enc.push(c));
            }
        }
        if !enc.is_empty() {
            check(enc.finish(), &mut again);
        }
        assert_eq!(again, expected);
    }
});
