//! Reference sequences worked out by hand from the kernel's algorithms (see
//! /work/shared/IPVS.md §2), run through the public API as the forwarding pipeline uses it:
//! the factory, `update` with the kernel's list order (newest first), `pick`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use xvs_schedulers::hash::{hash_32, hsiphash_u32, SipKey};
use xvs_schedulers::{
    new_scheduler, BackendId, BackendView, Change, Flow, Load, NoLoad, SchedFlags, Scheduler, Time,
    SCHEDULER_NAMES,
};

#[derive(Default)]
struct Counts(HashMap<u32, (u32, u32, bool)>);

impl Counts {
    fn set(&mut self, id: u32, active: u32, inactive: u32) -> &mut Self {
        let e = self.0.entry(id).or_default();
        e.0 = active;
        e.1 = inactive;
        self
    }
    fn overload(&mut self, id: u32) -> &mut Self {
        self.0.entry(id).or_default().2 = true;
        self
    }
}

impl Load for Counts {
    fn active(&self, id: BackendId) -> u32 {
        self.0.get(&id.0).map_or(0, |c| c.0)
    }
    fn inactive(&self, id: BackendId) -> u32 {
        self.0.get(&id.0).map_or(0, |c| c.1)
    }
    fn overloaded(&self, id: BackendId) -> bool {
        self.0.get(&id.0).is_some_and(|c| c.2)
    }
}

fn backend(id: u32, addr: [u8; 4], weight: u32) -> BackendView {
    BackendView {
        id: BackendId(id),
        addr: IpAddr::V4(Ipv4Addr::from(addr)),
        port: 80,
        weight,
        last_weight: weight.max(1),
    }
}

fn flow(src: [u8; 4], sport: u16) -> Flow {
    Flow {
        proto: 6,
        src: IpAddr::V4(Ipv4Addr::from(src)),
        sport,
        dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
        dport: 80,
    }
}

/// Build a service the usual way, `-A` then one `-a` per backend in `added` order: the list
/// grows at the head and the scheduler sees Init on the empty list, then Add(0) each time.
fn build_by_adds(s: &mut dyn Scheduler, added: &[BackendView]) -> Vec<BackendView> {
    let mut list: Vec<BackendView> = Vec::new();
    s.update(&list, Change::Init);
    for b in added {
        list.insert(0, b.clone());
        s.update(&list, Change::Add(0));
    }
    list
}

fn letters(s: &mut dyn Scheduler, list: &[BackendView], load: &dyn Load, k: usize) -> String {
    let f = flow([1, 2, 3, 4], 1);
    (0..k)
        .map(|_| match s.pick(&f, list, load, Time(0)) {
            Some(p) => char::from(b'A' + list[p].id.0 as u8),
            None => '-',
        })
        .collect()
}

const HASH1: SipKey = SipKey(2_654_435_761, 2_654_435_761);
const HASH2: SipKey = SipKey(2_654_446_892, 2_654_446_892);

#[test]
fn hash_vectors() {
    assert_eq!(hsiphash_u32(0, HASH1), 0x1d5a_77c2);
    assert_eq!(hsiphash_u32(0, HASH2), 0xf882_433f);
    assert_eq!(hsiphash_u32(0x0a00_0051, HASH1) % 4093, 3167);
    assert_eq!(hsiphash_u32(0x0a00_0051, HASH2) % 4092 + 1, 700);
    assert_eq!(hsiphash_u32(0xc0a8_0001, HASH1) % 4093, 1278);
    assert_eq!(hash_32(0xc0a8_0001, 8), 192);
}

#[test]
fn mh_three_backends_population_and_client() {
    for flags in ["mh-port", "mh-fallback"] {
        let flags = SchedFlags::parse(Some("mh"), flags).unwrap();
        let mut s = new_scheduler("mh", &flags).unwrap();
        let list = build_by_adds(
            s.as_mut(),
            &[
                backend(1, [10, 0, 0, 1], 1),
                backend(2, [10, 0, 0, 2], 1),
                backend(3, [10, 0, 0, 3], 1),
            ],
        );
        assert_eq!(list.iter().map(|b| b.id.0).collect::<Vec<_>>(), [3, 2, 1]);
        // 192.168.0.1 -> 10.0.0.2; with mh-port the source port 0 keeps the same hash.
        let p = s.pick(&flow([192, 168, 0, 1], 0), &list, &NoLoad, Time(0));
        assert_eq!(list[p.unwrap()].id.0, 2);
    }
    // The counts, through the concrete type.
    let mut mh = xvs_schedulers::MaglevHashing::new(false, false);
    let list = [
        backend(3, [10, 0, 0, 3], 1),
        backend(2, [10, 0, 0, 2], 1),
        backend(1, [10, 0, 0, 1], 1),
    ];
    mh.update(&list, Change::Init);
    let ids: Vec<u32> = mh.slots().map(|p| list[p.unwrap()].id.0).collect();
    assert_eq!(ids[..5], [1, 2, 2, 3, 3]);
    let n = |id| ids.iter().filter(|&&x| x == id).count();
    assert_eq!([n(1), n(2), n(3)], [1364, 1364, 1365]);
}

#[test]
fn wrr_sequences_with_and_without_the_cw1_pass() {
    let (a, b, c) = (
        backend(0, [10, 0, 0, 1], 4),
        backend(1, [10, 0, 0, 2], 3),
        backend(2, [10, 0, 0, 3], 2),
    );
    // Bound to a service already holding A, B, C (-E -s wrr).
    let mut s = new_scheduler("wrr", &SchedFlags::NONE).unwrap();
    let list = vec![a.clone(), b.clone(), c.clone()];
    s.update(&list, Change::Init);
    assert_eq!(
        letters(s.as_mut(), &list, &NoLoad, 18),
        "AABABCABCAABABCABC"
    );
    // -A, then -a C, -a B, -a A.
    let mut s = new_scheduler("wrr", &SchedFlags::NONE).unwrap();
    let list = build_by_adds(s.as_mut(), &[c, b, a]);
    assert_eq!(letters(s.as_mut(), &list, &NoLoad, 12), "ABCAABABCABC");
    // The same through the library helper, from the final list.
    let mut s = new_scheduler("wrr", &SchedFlags::NONE).unwrap();
    xvs_schedulers::init_by_adds(s.as_mut(), &list);
    assert_eq!(letters(s.as_mut(), &list, &NoLoad, 12), "ABCAABABCABC");

    let (a, b) = (
        backend(0, [10, 0, 0, 1], 100),
        backend(1, [10, 0, 0, 2], 50),
    );
    let mut s = new_scheduler("wrr", &SchedFlags::NONE).unwrap();
    let list = vec![a.clone(), b.clone()];
    s.update(&list, Change::Init);
    assert_eq!(letters(s.as_mut(), &list, &NoLoad, 6), "AABAAB");
    let mut s = new_scheduler("wrr", &SchedFlags::NONE).unwrap();
    let list = build_by_adds(s.as_mut(), &[b, a]);
    assert_eq!(letters(s.as_mut(), &list, &NoLoad, 8), "ABAABAAB");
}

#[test]
fn rr_cursor_follows_adds_and_removes() {
    let mut s = new_scheduler("rr", &SchedFlags::NONE).unwrap();
    let abc = [
        backend(0, [10, 0, 0, 1], 1),
        backend(1, [10, 0, 0, 2], 1),
        backend(2, [10, 0, 0, 3], 1),
    ];
    // Added A, B, C: list order C, B, A.
    let mut list = build_by_adds(s.as_mut(), &abc);
    assert_eq!(letters(s.as_mut(), &list, &NoLoad, 4), "CBAC");
    // Cursor at C (position 0). Adding D puts it at the head, before the cursor: D waits a turn.
    list.insert(0, backend(3, [10, 0, 0, 4], 1));
    s.update(&list, Change::Add(0));
    assert_eq!(letters(s.as_mut(), &list, &NoLoad, 5), "BADCB");
    // Cursor at B (position 2 of D, C, B, A). Deleting B moves it back to C: next is A.
    list.remove(2);
    s.update(&list, Change::Remove(2));
    assert_eq!(letters(s.as_mut(), &list, &NoLoad, 4), "ADCA");
    // Deleting the backend under the cursor moves the cursor to its predecessor (here D).
    assert_eq!(letters(s.as_mut(), &list, &NoLoad, 2), "DC");
    list.remove(1); // C, the cursor
    s.update(&list, Change::Remove(1));
    assert_eq!(letters(s.as_mut(), &list, &NoLoad, 3), "ADA");
    // Weight 0 and OVERLOAD are skipped; the cursor lands on what was picked.
    list[1].weight = 0;
    s.update(&list, Change::Edit(1));
    let mut load = Counts::default();
    assert_eq!(letters(s.as_mut(), &list, &load, 3), "DDD");
    load.overload(3);
    assert_eq!(letters(s.as_mut(), &list, &load, 1), "-");
}

#[test]
fn sh_bucket_fill_and_fallback_flags() {
    let mut s = xvs_schedulers::SourceHashing::new(false, false);
    let list = [
        backend(3, [10, 0, 0, 3], 1),
        backend(2, [10, 0, 0, 2], 2),
        backend(1, [10, 0, 0, 1], 1),
    ];
    s.update(&list, Change::Init);
    let ids: Vec<u32> = s.buckets().take(8).map(|p| list[p.unwrap()].id.0).collect();
    assert_eq!(ids, [3, 2, 2, 1, 3, 2, 2, 1]);
    // 192.168.0.1 -> bucket 192 = 48 full cycles of 4 -> R3.
    let f = flow([192, 168, 0, 1], 0);
    assert_eq!(list[s.pick(&f, &list, &NoLoad, Time(0)).unwrap()].id.0, 3);
    // Through the factory with sh-fallback: R3 overloaded -> the probe at (192+192)&255 = 128,
    // also R3, then 129 -> R2.
    let flags = SchedFlags::parse(Some("sh"), "sh-fallback").unwrap();
    let mut s = new_scheduler("sh", &flags).unwrap();
    s.update(&list, Change::Init);
    let mut load = Counts::default();
    load.overload(3);
    assert_eq!(list[s.pick(&f, &list, &load, Time(0)).unwrap()].id.0, 2);
}

#[test]
fn least_connection_tie_breaks() {
    let list = [
        backend(1, [10, 0, 0, 1], 1),
        backend(2, [10, 0, 0, 2], 2),
        backend(3, [10, 0, 0, 3], 1),
    ];
    let mut load = Counts::default();
    // oh: 1 -> 256, 2 -> 512, 3 -> 256.
    load.set(1, 1, 0).set(2, 2, 0).set(3, 0, 256);
    let pick = |name: &str, load: &Counts| {
        let mut s = new_scheduler(name, &SchedFlags::NONE).unwrap();
        s.update(&list, Change::Init);
        s.pick(&flow([1, 1, 1, 1], 1), &list, load, Time(0))
            .map(|p| list[p].id.0)
    };
    // lc: 256 vs 512 vs 256, strict < keeps the first of the two 256s.
    assert_eq!(pick("lc", &load), Some(1));
    // wlc: 256*2 > 512*1 false, so 2 does not replace 1; 256*1 > 256*1 false: 1 stays.
    assert_eq!(pick("wlc", &load), Some(1));
    // sed (active + 1): 1 -> 2, 2 -> 3 (w2), 3 -> 1: 2*2 > 3*1 -> 2; 3*1 > 1*2 -> 3.
    assert_eq!(pick("sed", &load), Some(3));
    // nq: backend 3 has no active connection: taken at once.
    assert_eq!(pick("nq", &load), Some(3));
    // fo: highest weight.
    assert_eq!(pick("fo", &load), Some(2));
    // ovf: 2 has active 2 <= weight 2 -> still eligible, highest weight.
    assert_eq!(pick("ovf", &load), Some(2));
    load.set(2, 3, 0);
    assert_eq!(pick("ovf", &load), Some(1));
}

#[test]
fn quiesced_and_overloaded_backends_never_get_new_connections() {
    // Backend 1 weight 0, backend 2 OVERLOAD, backends 3..5 usable.
    let list: Vec<BackendView> = (1..=5)
        .map(|i| backend(i, [10, 0, 0, i as u8], if i == 1 { 0 } else { 1 + i % 3 }))
        .collect();
    let mut load = Counts::default();
    load.overload(2).set(4, 3, 10);
    for name in SCHEDULER_NAMES {
        for flags in [SchedFlags::NONE, SchedFlags::from_bits(0x18)] {
            let mut s = new_scheduler(name, &flags).unwrap();
            s.update(&list, Change::Init);
            for k in 0..500u32 {
                let mut f = flow((0xc0a8_0000 + k).to_be_bytes(), 1000 + k as u16);
                f.dst = IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + k % 7));
                if let Some(p) = s.pick(&f, &list, &load, Time(u64::from(k))) {
                    let id = list[p].id.0;
                    assert!(id >= 3, "{name} {flags:?} picked backend {id}");
                }
            }
        }
    }
}

#[test]
fn every_scheduler_fails_cleanly_on_empty_and_stale_lists() {
    for name in SCHEDULER_NAMES {
        let mut s = new_scheduler(name, &SchedFlags::from_bits(0x38)).unwrap();
        s.update(&[], Change::Init);
        assert_eq!(
            s.pick(&flow([1, 1, 1, 1], 1), &[], &NoLoad, Time(0)),
            None,
            "{name}"
        );
        // Update with 50 backends, then pick with a shorter slice: no panic, positions in range.
        let list: Vec<_> = (0..50)
            .map(|i| backend(i, [10, 1, 0, i as u8], 1))
            .collect();
        s.update(&list, Change::Init);
        for k in 0..200u32 {
            let f = flow((0x0b00_0000 + k * 7919).to_be_bytes(), k as u16);
            if let Some(p) = s.pick(&f, &list[..5], &NoLoad, Time(0)) {
                assert!(p < 5, "{name}");
            }
        }
    }
}
