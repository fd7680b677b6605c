//! Connection table: lookups from both directions, capacity, IPv6, listing, counts across a
//! connection's life, expiry precision and templates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xvs_forwarding::conn::state::tcp;
use xvs_forwarding::conn::*;
use xvs_schedulers::Load;

const SYN: u8 = tcp::FLAG_SYN;
const ACK: u8 = tcp::FLAG_ACK;
const FIN: u8 = tcp::FLAG_FIN;
const RST: u8 = tcp::FLAG_RST;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn table(capacity: u32) -> ConnTable {
    ConnTable::new(&ConnConfig {
        capacity,
        v6_capacity: capacity / 2,
        backends: 8,
        seed: 0x1234_5678_9abc_def0,
    })
}

fn secs(s: u64) -> Time {
    Time::from_secs(s)
}

fn ms(m: u64) -> Time {
    Time::from_millis(m)
}

fn nat(client: IpAddr, cport: u16, backend: u32) -> NewConn {
    let vip = if client.is_ipv6() {
        v6("2001:2::100")
    } else {
        v4(198, 18, 0, 100)
    };
    let daddr = if client.is_ipv6() {
        v6(&format!("2001:2:1::{backend}"))
    } else {
        v4(198, 18, 1, backend as u8)
    };
    NewConn {
        proto: 6,
        client,
        cport,
        vaddr: vip,
        vport: 80,
        daddr,
        dport: 8080,
        local: None,
        backend: BackendId(backend),
        service: 0,
        method: Method::Nat,
        control: None,
    }
}

fn inbound(c: &NewConn) -> Tuple {
    Tuple {
        proto: c.proto,
        src: c.client,
        sport: c.cport,
        dst: c.vaddr,
        dport: c.vport,
    }
}

fn reply(c: &NewConn) -> Tuple {
    let (dst, dport) = c.local.unwrap_or((c.client, c.cport));
    Tuple {
        proto: c.proto,
        src: c.daddr,
        sport: c.dport,
        dst,
        dport,
    }
}

#[test]
fn bytes_per_ipv4_connection_stay_within_64() {
    assert_eq!(ENTRY_BYTES, 52);
    // IPv4 only, 64 Ki entries: 52-byte entries + 2.5 index slots of 4 bytes each + 4096 + 4
    // + 1 wheel heads of 8 bytes + 4096 occupancy bits + a 4096-item embryonic ring of 4 bytes.
    let cfg = |capacity, v6_capacity| ConnConfig {
        capacity,
        v6_capacity,
        backends: 1,
        seed: 1,
    };
    let t = ConnTable::new(&cfg(1 << 16, 0));
    assert_eq!(
        t.bytes(),
        52 * 65536 + 4 * 163_841 + 8 * 4101 + 8 * 64 + 4 * 4096
    );
    assert_eq!(t.bytes_per_entry(), 63);
    // 1 Ki: 64 + 128 + 1 wheel heads, 64 occupancy bits, a 64-item ring.
    let t = ConnTable::new(&cfg(1 << 10, 1 << 10));
    assert_eq!(t.bytes(), 52 * 1024 + 4 * 2561 + 8 * 193 + 8 + 4 * 64);
    assert_eq!(t.bytes_per_entry(), 64);
    // Room for IPv6 costs nothing until IPv6 connections come.
    assert_eq!(table(1 << 16).bytes_per_entry(), 63);
}

#[test]
fn ipv6_address_blocks_grow_on_demand_up_to_their_maximum() {
    let mut t = ConnTable::new(&ConnConfig {
        capacity: 256,
        v6_capacity: 40,
        backends: 8,
        seed: 3,
    });
    let before = t.bytes();
    let mut ids = Vec::new();
    for i in 0..40u16 {
        let c = NewConn {
            proto: 6,
            client: "2001:db8::1".parse().unwrap(),
            cport: 1000 + i,
            vaddr: "2001:db8::100".parse().unwrap(),
            vport: 80,
            daddr: "2001:db8::200".parse().unwrap(),
            dport: 8080,
            local: None,
            backend: BackendId(1),
            service: 0,
            method: Method::Nat,
            control: None,
        };
        ids.push(t.insert(&c, secs(1)).expect("room for 40 IPv6 connections"));
    }
    assert!(t.bytes() > before);
    assert_eq!(t.v6_usage(), (40, 40));
    let c = NewConn {
        proto: 6,
        client: "2001:db8::1".parse().unwrap(),
        cport: 2000,
        vaddr: "2001:db8::100".parse().unwrap(),
        vport: 80,
        daddr: "2001:db8::200".parse().unwrap(),
        dport: 8080,
        local: None,
        backend: BackendId(1),
        service: 0,
        method: Method::Nat,
        control: None,
    };
    assert_eq!(t.insert(&c, secs(1)), None, "the 41st IPv6 connection");
    assert!(t.expire_now(ids[7], secs(2)));
    let id = t.insert(&c, secs(2)).expect("a freed block is reused");
    assert_eq!(t.get(id).unwrap().client, c.client);
    assert_eq!(t.v6_usage(), (40, 40));
    t.check().unwrap();
}

#[test]
fn nat_found_from_both_directions() {
    let mut t = table(64);
    let c = nat(v4(198, 18, 2, 1), 40000, 1);
    let id = t.insert(&c, secs(1)).unwrap();
    assert_eq!(t.lookup(&inbound(&c), secs(1)), Some((id, Direction::In)));
    assert_eq!(t.lookup(&reply(&c), secs(1)), Some((id, Direction::Out)));
    // Neither the reversed inbound tuple nor another port matches.
    let mut other = inbound(&c);
    other.sport = 40001;
    assert_eq!(t.lookup(&other, secs(1)), None);
    let mut udp = inbound(&c);
    udp.proto = 17;
    assert_eq!(t.lookup(&udp, secs(1)), None);
    let got = t.get(id).unwrap();
    assert_eq!(got.daddr, c.daddr);
    assert_eq!(got.dport, 8080);
    assert_eq!(got.method, Method::Nat);
    assert_eq!(got.local, None);
    assert_eq!(got.flags & flags::NOOUTPUT, 0);
    t.check().unwrap();
}

#[test]
fn fullnat_reply_uses_local_address() {
    let mut t = table(64);
    let mut c = nat(v4(198, 18, 2, 1), 40000, 1);
    c.method = Method::FullNat;
    c.local = Some((v4(198, 18, 3, 1), 5000));
    let id = t.insert(&c, secs(1)).unwrap();
    assert_eq!(t.lookup(&reply(&c), secs(1)), Some((id, Direction::Out)));
    // The NAT-style reply (to the client) is not this connection's.
    let mut to_client = reply(&c);
    to_client.dst = c.client;
    to_client.dport = c.cport;
    assert_eq!(t.lookup(&to_client, secs(1)), None);
    assert_eq!(t.get(id).unwrap().local, Some((v4(198, 18, 3, 1), 5000)));
}

#[test]
fn dr_and_tunnel_have_no_outbound_index() {
    for m in [Method::Dr, Method::Tunnel] {
        let mut t = table(64);
        let mut c = nat(v4(198, 18, 2, 1), 40000, 1);
        c.method = m;
        c.dport = 80;
        let id = t.insert(&c, secs(1)).unwrap();
        assert_eq!(t.lookup(&inbound(&c), secs(1)), Some((id, Direction::In)));
        assert_eq!(t.lookup(&reply(&c), secs(1)), None);
        assert_ne!(t.get(id).unwrap().flags & flags::NOOUTPUT, 0);
        t.check().unwrap();
    }
}

#[test]
fn ipv6_and_mixed_family_entries() {
    let mut t = table(64);
    let c = nat(v6("2001:2::1:1"), 40000, 2);
    let id = t.insert(&c, secs(1)).unwrap();
    assert_eq!(t.lookup(&inbound(&c), secs(1)), Some((id, Direction::In)));
    assert_eq!(t.lookup(&reply(&c), secs(1)), Some((id, Direction::Out)));
    assert_eq!(t.get(id).unwrap().client, c.client);
    // IPv4 service, IPv6 tunnel backend.
    let mut m = nat(v4(198, 18, 2, 9), 1234, 3);
    m.method = Method::Tunnel;
    m.daddr = v6("2001:2:1::3");
    let id2 = t.insert(&m, secs(1)).unwrap();
    assert_eq!(t.lookup(&inbound(&m), secs(1)), Some((id2, Direction::In)));
    let g = t.get(id2).unwrap();
    assert_eq!((g.client, g.vaddr, g.daddr), (m.client, m.vaddr, m.daddr));
    assert_eq!(t.v6_usage(), (2, 32));
    // An IPv4-mapped IPv6 address is not the IPv4 address.
    let mut mapped = inbound(&m);
    mapped.src = IpAddr::V6(Ipv4Addr::new(198, 18, 2, 9).to_ipv6_mapped());
    mapped.dst = IpAddr::V6(Ipv4Addr::new(198, 18, 0, 100).to_ipv6_mapped());
    assert_eq!(t.lookup(&mapped, secs(1)), None);
    t.check().unwrap();
}

#[test]
fn full_table_refuses_and_frees_slots() {
    let mut t = table(4);
    let conns: Vec<_> = (0..4)
        .map(|i| nat(v4(198, 18, 2, 1), 1000 + i, 1))
        .collect();
    let ids: Vec<_> = conns
        .iter()
        .map(|c| t.insert(c, secs(1)).unwrap())
        .collect();
    assert_eq!(t.len(), 4);
    assert_eq!(t.insert(&nat(v4(198, 18, 2, 2), 1, 1), secs(1)), None);
    assert!(t.expire_now(ids[2], secs(2)));
    assert_eq!(t.lookup(&inbound(&conns[2]), secs(2)), None);
    assert!(t.insert(&nat(v4(198, 18, 2, 2), 1, 1), secs(2)).is_some());
    // IPv6 slab full (capacity 4 → 2 IPv6 slots) while the table still has room.
    let mut t = table(4);
    assert!(t.insert(&nat(v6("2001:2::1"), 1, 1), secs(1)).is_some());
    assert!(t.insert(&nat(v6("2001:2::1"), 2, 1), secs(1)).is_some());
    assert_eq!(t.insert(&nat(v6("2001:2::1"), 3, 1), secs(1)), None);
    assert!(t.insert(&nat(v4(198, 18, 2, 1), 3, 1), secs(1)).is_some());
    // Unknown backend.
    assert_eq!(t.insert(&nat(v4(198, 18, 2, 1), 4, 99), secs(1)), None);
    t.check().unwrap();
}

#[test]
fn counts_follow_a_tcp_connection() {
    let mut t = table(64);
    let b = BackendId(1);
    let c = nat(v4(198, 18, 2, 1), 40000, 1);
    let id = t.insert(&c, secs(10)).unwrap();
    assert_eq!((t.counts().active(b), t.counts().inactive(b)), (0, 1));
    assert_eq!(t.on_packet(id, Direction::In, SYN, secs(10)), tcp::SYN_RECV);
    assert_eq!(
        t.on_packet(id, Direction::Out, SYN | ACK, secs(10)),
        tcp::SYN_RECV
    );
    assert_eq!(
        t.on_packet(id, Direction::In, ACK, secs(10)),
        tcp::ESTABLISHED
    );
    assert_eq!((t.counts().active(b), t.counts().inactive(b)), (1, 0));
    assert_eq!(t.expires_in(id, secs(10)), Some(900_000));
    assert_eq!(
        t.on_packet(id, Direction::In, FIN | ACK, secs(20)),
        tcp::CLOSE_WAIT
    );
    assert_eq!((t.counts().active(b), t.counts().inactive(b)), (0, 1));
    assert_eq!(
        t.on_packet(id, Direction::Out, FIN | ACK, secs(20)),
        tcp::TIME_WAIT
    );
    assert_eq!(t.expires_in(id, secs(20)), Some(120_000));
    // Expiry removes it and its inactive count.
    t.expire(secs(141), 1 << 20);
    assert_eq!(t.len(), 0);
    assert_eq!((t.counts().active(b), t.counts().inactive(b)), (0, 0));
    t.check().unwrap();
}

#[test]
fn rst_and_flagless_segments() {
    let mut t = table(64);
    let b = BackendId(1);
    let c = nat(v4(198, 18, 2, 1), 40000, 1);
    let id = t.insert(&c, secs(0)).unwrap();
    t.on_packet(id, Direction::In, SYN, secs(0));
    t.on_packet(id, Direction::In, ACK, secs(0));
    assert_eq!(t.counts().active(b), 1);
    // A segment with only PSH: CLOSE.
    assert_eq!(t.on_packet(id, Direction::In, 0x08, secs(0)), tcp::CLOSE);
    assert_eq!(t.counts().active(b), 0);
    assert_eq!(t.expires_in(id, secs(0)), Some(10_000));
    assert_eq!(t.on_packet(id, Direction::In, SYN, secs(1)), tcp::SYN_RECV);
    assert_eq!(t.on_packet(id, Direction::Out, RST, secs(1)), tcp::CLOSE);
}

#[test]
fn dr_uses_input_only_table_until_a_reply_is_seen() {
    let mut t = table(64);
    let mut c = nat(v4(198, 18, 2, 1), 40000, 1);
    c.method = Method::Dr;
    let id = t.insert(&c, secs(0)).unwrap();
    t.on_packet(id, Direction::In, SYN, secs(0));
    t.on_packet(id, Direction::In, ACK, secs(0));
    // Input-only: ES + fin → FIN_WAIT (the IN table would give CLOSE_WAIT).
    assert_eq!(
        t.on_packet(id, Direction::In, FIN | ACK, secs(0)),
        tcp::FIN_WAIT
    );
    // The first OUT packet clears NOOUTPUT; from then on the IN table is used.
    let mut c2 = nat(v4(198, 18, 2, 1), 40001, 1);
    c2.method = Method::Dr;
    let id2 = t.insert(&c2, secs(0)).unwrap();
    t.on_packet(id2, Direction::In, SYN, secs(0));
    t.on_packet(id2, Direction::Out, SYN | ACK, secs(0));
    assert_eq!(t.get(id2).unwrap().flags & flags::NOOUTPUT, 0);
    t.on_packet(id2, Direction::In, ACK, secs(0));
    assert_eq!(
        t.on_packet(id2, Direction::In, FIN | ACK, secs(0)),
        tcp::CLOSE_WAIT
    );
}

#[test]
fn udp_single_state_and_runtime_timeouts() {
    let mut t = table(64);
    let mut c = nat(v4(198, 18, 2, 1), 5353, 1);
    c.proto = 17;
    let id = t.insert(&c, secs(0)).unwrap();
    assert_eq!(t.expires_in(id, secs(0)), Some(3_000));
    t.on_packet(id, Direction::In, 0, secs(0));
    assert_eq!(t.expires_in(id, secs(0)), Some(300_000));
    assert_eq!(t.counts().inactive(BackendId(1)), 1);
    t.set_timeouts(0, 0, 20);
    t.on_packet(id, Direction::Out, 0, secs(1));
    assert_eq!(t.expires_in(id, secs(1)), Some(20_000));
    assert_eq!(t.counts().active(BackendId(1)), 0, "UDP is never active");
    let l: Vec<_> = t.list(secs(1)).collect();
    assert_eq!(l.len(), 1);
    assert_eq!(
        l[0].to_string(),
        "UDP 00:20  UDP         198.18.2.1:5353    198.18.0.100:80    198.18.1.1:8080"
    );
}

#[test]
fn lookup_never_returns_an_expired_entry() {
    let mut t = table(64);
    let c = nat(v4(198, 18, 2, 1), 40000, 1);
    let id = t.insert(&c, ms(1_000)).unwrap();
    t.on_packet(id, Direction::In, SYN, ms(1_000)); // SYN_RECV, 60 s
    assert!(t.lookup(&inbound(&c), ms(60_999)).is_some());
    // No sweep ran, yet at the exact expiry the entry is gone, with its count.
    assert_eq!(t.lookup(&inbound(&c), ms(61_000)), None);
    assert_eq!(t.len(), 0);
    assert_eq!(t.counts().inactive(BackendId(1)), 0);
    t.check().unwrap();
}

#[test]
fn sweep_precision_is_one_tick() {
    let mut t = table(64);
    let c = nat(v4(198, 18, 2, 1), 40000, 1);
    let id = t.insert(&c, ms(5_003)).unwrap();
    t.on_packet(id, Direction::In, 0x08, ms(5_003)); // CLOSE: 10 s → due at 15 003 ms
    for now in (5_003..15_003).step_by(1) {
        t.expire(ms(now), 64);
    }
    assert_eq!(t.len(), 1, "not before its time");
    let mut removed_at = None;
    for now in 15_003..15_100 {
        if t.expire(ms(now), 64) == 1 {
            removed_at = Some(now);
            break;
        }
    }
    let at = removed_at.expect("swept");
    assert!(at - 15_003 <= 8, "swept {} ms late", at - 15_003);
    t.check().unwrap();
}

/// Both wheel levels (64-entry table: 64 level-0 buckets of 8 ms, 8 level-1 buckets of 512 ms):
/// UDP entries with timeouts from 0.1 s to 120 s, re-armed at random, swept by small steps and by
/// jumps; each is removed within a tick of its expiry (plus the step), never before it.
#[test]
fn two_level_wheel_sweeps_every_timeout_on_time() {
    let mut t = table(64);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut now = 1_000u64;
    // (id, expiry ms)
    let mut live: Vec<(ConnId, u64, NewConn)> = Vec::new();
    let mut port = 1000u16;
    for step in 0..4000 {
        if live.len() < 60 && rnd(3) == 0 {
            let timeout = [100, 700, 3_000, 9_000, 60_000, 120_000][rnd(6) as usize];
            t.set_timeout_table(Timeouts {
                udp: timeout,
                ..Timeouts::default()
            });
            port = port.wrapping_add(1);
            let c = NewConn {
                proto: 17,
                ..nat(v4(198, 18, 2, 1), port, 1)
            };
            let id = t.insert(&c, ms(now)).unwrap();
            t.on_packet(id, Direction::In, 0, ms(now));
            live.push((id, now + timeout as u64, c));
        } else if !live.is_empty() && rnd(4) == 0 {
            // Re-arm one with another timeout (longer or shorter).
            let k = rnd(live.len() as u64) as usize;
            let timeout = [100, 2_000, 30_000][rnd(3) as usize];
            t.set_timeout_table(Timeouts {
                udp: timeout,
                ..Timeouts::default()
            });
            t.on_packet(live[k].0, Direction::In, 0, ms(now));
            live[k].1 = now + timeout as u64;
        }
        let dt = if step % 500 == 499 {
            20_000
        } else {
            1 + rnd(40)
        };
        now += dt;
        t.expire(ms(now), 1 << 20);
        t.check().unwrap_or_else(|e| panic!("step {step}: {e}"));
        live.retain(|&(id, exp, c)| {
            let present = t.get(id).is_some_and(|g| g.cport == c.cport);
            if exp + 8 + dt <= now {
                assert!(
                    !present,
                    "step {step}: entry due at {exp} still there at {now}"
                );
            }
            if now < exp {
                assert!(present, "step {step}: entry due at {exp} gone at {now}");
            }
            present
        });
    }
}

#[test]
fn shortening_a_timeout_moves_the_entry() {
    let mut t = table(64);
    let c = nat(v4(198, 18, 2, 1), 40000, 1);
    let id = t.insert(&c, secs(0)).unwrap();
    t.on_packet(id, Direction::In, SYN, secs(0));
    t.on_packet(id, Direction::In, ACK, secs(0)); // ES: 900 s
    t.on_packet(id, Direction::In, RST, secs(1)); // CLOSE: 10 s
    t.check().unwrap();
    t.expire(ms(11_009), 1 << 20);
    assert_eq!(t.len(), 0);
}

#[test]
fn persistence_template_lifecycle() {
    let mut t = table(64);
    let b = BackendId(2);
    let key = TemplateKey {
        proto: 6,
        client: v4(198, 18, 2, 0),
        vaddr: v4(198, 18, 0, 100),
        vport: 80,
    };
    assert_eq!(t.template_lookup(&key, secs(0)), None);
    let ct = t
        .insert_template(
            &key,
            b,
            v4(198, 18, 1, 2),
            8080,
            0,
            Method::Nat,
            300,
            secs(0),
        )
        .unwrap();
    assert_eq!(t.counts().persistent(b), 1);
    assert_eq!((t.counts().active(b), t.counts().inactive(b)), (0, 0));
    assert_eq!(t.template_lookup(&key, secs(1)), Some(ct));
    // A template is not a connection: the plain lookup does not see it.
    let as_tuple = Tuple {
        proto: 6,
        src: key.client,
        sport: 0,
        dst: key.vaddr,
        dport: 80,
    };
    assert_eq!(t.lookup(&as_tuple, secs(1)), None);

    let mut c = nat(v4(198, 18, 2, 7), 40000, 2);
    c.control = Some(ct);
    let id = t.insert(&c, secs(100)).unwrap();
    assert_eq!(t.get(ct).unwrap().n_control, 1);
    assert_eq!(
        t.expires_in(ct, secs(100)),
        Some(300_000),
        "re-armed from the insert"
    );
    assert_eq!(t.get(ct).unwrap().state_name(), "NONE");
    t.on_packet(id, Direction::In, SYN, secs(100));
    t.on_packet(id, Direction::In, ACK, secs(100));
    assert_eq!(t.get(ct).unwrap().state_name(), "ASSURED");

    // At 400 s the template's time is up but it still controls the ES connection (until 1000 s):
    // it is kept with timeout 60, re-armed from its expiry time.
    t.expire(secs(401), 1 << 20);
    assert_eq!(t.template_lookup(&key, secs(401)), Some(ct));
    assert_eq!(t.expires_in(ct, secs(401)), Some(59_000));
    assert_eq!(t.get(ct).unwrap().timeout_ms, 60_000);
    // A packet at 110 s keeps the connection until 1010 s. The template, due at 460, 520, …,
    // 1000 s, is deferred each time while it owns the connection, so it ends up due at 1060 s.
    t.on_packet(id, Direction::In, ACK, secs(110));
    for s in 402..=1_010 {
        t.expire(secs(s), 1 << 16);
    }
    assert_eq!(t.lookup(&inbound(&c), secs(1_010)), None);
    assert_eq!(t.get(ct).unwrap().n_control, 0);
    assert_eq!(t.expires_in(ct, secs(1_010)), Some(50_000));
    // A reuse now re-arms with 60 s, not 300 s.
    t.rearm(ct, secs(1_011));
    assert_eq!(t.expires_in(ct, secs(1_011)), Some(60_000));
    t.expire(secs(1_072), 1 << 16);
    assert_eq!(t.template_lookup(&key, secs(1_072)), None);
    assert_eq!(t.counts().persistent(b), 0);
    assert_eq!(t.len(), 0);
    t.check().unwrap();
}

#[test]
fn invalidated_template_is_not_found_but_keeps_its_entries() {
    let mut t = table(64);
    let key = TemplateKey {
        proto: 0,
        client: v4(198, 18, 2, 0),
        vaddr: v4(0, 0, 0, 7), // fwmark 7
        vport: 0,
    };
    let ct = t
        .insert_template(
            &key,
            BackendId(1),
            v4(198, 18, 1, 1),
            0,
            3,
            Method::Dr,
            300,
            secs(0),
        )
        .unwrap();
    let mut c = nat(v4(198, 18, 2, 7), 40000, 1);
    c.method = Method::Dr;
    c.control = Some(ct);
    let id = t.insert(&c, secs(0)).unwrap();
    t.invalidate_template(ct);
    assert_eq!(t.template_lookup(&key, secs(1)), None);
    let g = t.get(ct).unwrap();
    assert_eq!((g.vport, g.dport, g.n_control), (0xFFFF, 0xFFFF, 1));
    // A new template for the same key can be created beside it.
    let ct2 = t
        .insert_template(
            &key,
            BackendId(2),
            v4(198, 18, 1, 2),
            0,
            3,
            Method::Dr,
            300,
            secs(1),
        )
        .unwrap();
    assert_eq!(t.template_lookup(&key, secs(1)), Some(ct2));
    assert_eq!(t.get(id).unwrap().control, Some(ct));
    t.check().unwrap();
}

#[test]
fn delete_drops_an_unassured_template_with_its_last_entry() {
    let mut t = table(64);
    let key = TemplateKey {
        proto: 6,
        client: v4(198, 18, 2, 0),
        vaddr: v4(198, 18, 0, 100),
        vport: 80,
    };
    let ct = t
        .insert_template(
            &key,
            BackendId(1),
            v4(198, 18, 1, 1),
            80,
            0,
            Method::Nat,
            300,
            secs(0),
        )
        .unwrap();
    let mut c = nat(v4(198, 18, 2, 7), 40000, 1);
    c.control = Some(ct);
    let id = t.insert(&c, secs(0)).unwrap();
    // expire_now keeps the template (IPVS's timer path).
    assert!(t.expire_now(id, secs(1)));
    assert_eq!(t.template_lookup(&key, secs(1)), Some(ct));
    // delete (conn_del) drops the unassured template too.
    let id = t.insert(&c, secs(2)).unwrap();
    assert!(t.delete(id, secs(3)));
    assert_eq!(t.template_lookup(&key, secs(3)), None);
    assert_eq!(t.len(), 0);
    assert_eq!(t.counts().persistent(BackendId(1)), 0);
    // Deleting a template that owns entries defers it.
    let ct = t
        .insert_template(
            &key,
            BackendId(1),
            v4(198, 18, 1, 1),
            80,
            0,
            Method::Nat,
            300,
            secs(10),
        )
        .unwrap();
    let mut c = nat(v4(198, 18, 2, 7), 40001, 1);
    c.control = Some(ct);
    t.insert(&c, secs(10)).unwrap();
    assert!(!t.delete(ct, secs(11)));
    assert_eq!(t.expires_in(ct, secs(11)), Some(60_000));
    t.check().unwrap();
}

#[test]
fn expire_backend_sweeps_only_that_backend() {
    let mut t = table(256);
    let key = TemplateKey {
        proto: 6,
        client: v4(198, 18, 2, 0),
        vaddr: v4(198, 18, 0, 100),
        vport: 80,
    };
    let ct = t
        .insert_template(
            &key,
            BackendId(1),
            v4(198, 18, 1, 1),
            80,
            0,
            Method::Nat,
            300,
            secs(0),
        )
        .unwrap();
    for i in 0..100u16 {
        let mut c = nat(v4(198, 18, 2, 7), 1000 + i, 1 + u32::from(i % 2));
        if i % 2 == 0 {
            c.control = Some(ct);
        }
        let id = t.insert(&c, secs(0)).unwrap();
        t.on_packet(id, Direction::In, SYN, secs(0));
        t.on_packet(id, Direction::In, ACK, secs(0));
    }
    assert_eq!(t.counts().active(BackendId(1)), 50);
    let mut from = 0;
    let mut steps = 0;
    while let Some(next) = t.expire_backend(BackendId(1), secs(1), from, 16) {
        from = next;
        steps += 1;
        t.check().unwrap();
    }
    assert!(steps >= 256 / 16 - 1);
    assert_eq!(t.counts().active(BackendId(1)), 0);
    assert_eq!(
        t.counts().persistent(BackendId(1)),
        0,
        "template went with its last entry"
    );
    assert_eq!(t.counts().active(BackendId(2)), 50);
    assert_eq!(t.len(), 50);
    t.check().unwrap();
}

#[test]
fn bad_handles_are_harmless() {
    let mut t = table(8);
    let bogus = ConnId(12345);
    assert_eq!(t.on_packet(bogus, Direction::In, SYN, secs(0)), 0);
    assert!(!t.expire_now(bogus, secs(0)));
    assert!(!t.delete(bogus, secs(0)));
    t.rearm(bogus, secs(0));
    t.invalidate_template(bogus);
    assert_eq!(t.get(bogus), None);
    assert_eq!(t.get(ConnId(3)), None, "free slot");
    let mut c = nat(v4(198, 18, 2, 1), 1, 1);
    c.control = Some(bogus);
    let id = t.insert(&c, secs(0)).unwrap();
    assert_eq!(t.get(id).unwrap().control, None);
    t.check().unwrap();
}

#[test]
fn time_jumps_do_not_lose_entries() {
    let mut t = table(1024);
    for i in 0..500u16 {
        let c = nat(v4(198, 18, 2, (i % 200) as u8), i, 1);
        let id = t.insert(&c, secs(1_000_000)).unwrap();
        t.on_packet(id, Direction::In, SYN, secs(1_000_000));
        t.on_packet(id, Direction::In, ACK, secs(1_000_000));
    }
    // Idle for 10 minutes, then 20 hours: every entry goes within a bounded number of calls.
    t.expire(secs(1_000_600), 1 << 20);
    assert_eq!(t.len(), 500);
    let mut calls = 0;
    while !t.is_empty() && calls < 10_000 {
        t.expire(secs(1_072_000), 64);
        calls += 1;
    }
    assert_eq!(t.len(), 0);
    t.check().unwrap();
}

#[test]
fn overload_thresholds_through_the_table() {
    let mut t = table(64);
    let b = BackendId(3);
    t.set_thresholds(b, 4, 0);
    let mut ids = Vec::new();
    for p in 0..4u16 {
        ids.push(
            t.insert(&nat(v4(198, 18, 2, 1), 100 + p, 3), secs(0))
                .unwrap(),
        );
        assert_eq!(t.counts().overloaded(b), p == 3, "after {} binds", p + 1);
    }
    // Templates do not count towards the total, but binding one re-checks it.
    let key = TemplateKey {
        proto: 6,
        client: v4(198, 18, 2, 0),
        vaddr: v4(198, 18, 0, 100),
        vport: 80,
    };
    t.insert_template(
        &key,
        b,
        v4(198, 18, 1, 3),
        8080,
        0,
        Method::Nat,
        60,
        secs(0),
    )
    .unwrap();
    assert!(t.counts().overloaded(b));
    // Establishing moves counts but never re-evaluates OVERLOAD.
    t.on_packet(ids[0], Direction::In, SYN, secs(0));
    t.on_packet(ids[0], Direction::In, ACK, secs(0));
    assert!(t.counts().overloaded(b));
    // 3/4 rule: total 3 → 12 < 12 false; total 2 → 8 < 12 true.
    assert!(t.expire_now(ids[1], secs(1)));
    assert!(t.counts().overloaded(b));
    assert!(t.expire_now(ids[0], secs(1)));
    assert!(!t.counts().overloaded(b));
    assert_eq!(t.counts().active(b), 0);
    assert_eq!(t.counts().inactive(b), 2);
    // With a lower threshold of 2: cleared only below 2.
    t.set_thresholds(b, 3, 2);
    t.insert(&nat(v4(198, 18, 2, 1), 200, 3), secs(2)).unwrap();
    assert!(t.counts().overloaded(b));
    assert!(t.expire_now(ids[2], secs(2)));
    assert!(t.counts().overloaded(b), "2 is not below 2");
    assert!(t.expire_now(ids[3], secs(2)));
    assert!(!t.counts().overloaded(b));
}

#[test]
fn prefetch_is_only_a_hint() {
    let mut t = table(64);
    let c4 = nat(v4(198, 18, 2, 1), 40000, 1);
    let c6 = nat(v6("2001:2::1:1"), 40000, 2);
    let id4 = t.insert(&c4, secs(1)).unwrap();
    let id6 = t.insert(&c6, secs(1)).unwrap();
    let miss = Tuple {
        sport: 1,
        ..inbound(&c4)
    };
    for tu in [inbound(&c4), reply(&c4), inbound(&c6), reply(&c6), miss] {
        t.prefetch(&tu);
    }
    assert_eq!(t.len(), 2);
    assert_eq!(t.lookup(&inbound(&c4), secs(1)), Some((id4, Direction::In)));
    assert_eq!(t.lookup(&reply(&c6), secs(1)), Some((id6, Direction::Out)));
    assert_eq!(t.lookup(&miss, secs(1)), None);
    t.check().unwrap();
}

/// `open` leaves the table exactly as `insert` followed by `on_packet` of the same inbound
/// packet does: entry, counts, embryonic count, expiry, lookups from both sides — for every
/// method, TCP / UDP / SCTP, IPv4 and IPv6, with and without `secure_tcp`, and with a template.
#[test]
fn open_is_insert_then_on_packet() {
    use xvs_forwarding::conn::state::sctp;
    let methods = [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat];
    let tcp_flags = [SYN, SYN | ACK, ACK, FIN, RST, 0, FIN | ACK];
    let sctp_chunks = [sctp::CHUNK_INIT, 0, 3, 6];
    for secure in [false, true] {
        for six in [false, true] {
            for &method in &methods {
                for proto in [6u8, 17, 132] {
                    let flags: &[u8] = match proto {
                        6 => &tcp_flags,
                        132 => &sctp_chunks,
                        _ => &[0],
                    };
                    for &f in flags {
                        for with_template in [false, true] {
                            let mut a = table(64);
                            let mut b = table(64);
                            a.set_secure_tcp(secure);
                            b.set_secure_tcp(secure);
                            let client = if six {
                                v6("2001:2::7")
                            } else {
                                v4(198, 18, 2, 7)
                            };
                            let mut c = nat(client, 40000, 3);
                            c.proto = proto;
                            c.method = method;
                            if method == Method::FullNat {
                                c.local = Some((
                                    if six {
                                        v6("2001:2:3::1")
                                    } else {
                                        v4(198, 18, 3, 1)
                                    },
                                    2000,
                                ));
                            }
                            let now = secs(5);
                            if with_template {
                                let key = TemplateKey {
                                    proto,
                                    client,
                                    vaddr: c.vaddr,
                                    vport: 80,
                                };
                                let ta = a.insert_template(
                                    &key,
                                    c.backend,
                                    c.daddr,
                                    8080,
                                    0,
                                    method,
                                    300,
                                    secs(1),
                                );
                                let tb = b.insert_template(
                                    &key,
                                    c.backend,
                                    c.daddr,
                                    8080,
                                    0,
                                    method,
                                    300,
                                    secs(1),
                                );
                                assert_eq!(ta, tb);
                                c.control = ta;
                            }
                            let ia = a.insert(&c, now).unwrap();
                            a.on_packet(ia, Direction::In, f, now);
                            let ib = b.open(&c, f, now).unwrap();
                            let what = format!("{method:?} proto {proto} flags {f:#x} secure {secure} v6 {six} template {with_template}");
                            assert_eq!(ia, ib, "{what}");
                            assert_eq!(a.get(ia), b.get(ib), "{what}");
                            assert_eq!(a.expires_in(ia, now), b.expires_in(ib, now), "{what}");
                            assert_eq!(a.embryonic(), b.embryonic(), "{what}");
                            assert_eq!(a.len(), b.len(), "{what}");
                            let id = c.backend;
                            assert_eq!(a.counts().active(id), b.counts().active(id), "{what}");
                            assert_eq!(a.counts().inactive(id), b.counts().inactive(id), "{what}");
                            assert_eq!(
                                a.counts().persistent(id),
                                b.counts().persistent(id),
                                "{what}"
                            );
                            if let Some(t) = c.control {
                                assert_eq!(a.get(t), b.get(t), "{what}");
                                assert_eq!(a.expires_in(t, now), b.expires_in(t, now), "{what}");
                            }
                            assert_eq!(
                                a.lookup(&inbound(&c), now),
                                b.lookup(&inbound(&c), now),
                                "{what}"
                            );
                            assert_eq!(
                                a.lookup(&reply(&c), now),
                                b.lookup(&reply(&c), now),
                                "{what}"
                            );
                            a.check().unwrap();
                            b.check().unwrap();
                            // Both expire at the same time.
                            let t = a.expires_in(ia, now).unwrap() as u64;
                            let later = Time::from_millis(5_000 + t);
                            let before = Time::from_millis(5_000 + t - 1);
                            assert_eq!(
                                a.expire(before, 1 << 20),
                                b.expire(before, 1 << 20),
                                "{what}"
                            );
                            assert_eq!(a.len(), b.len(), "{what}");
                            assert_eq!(
                                a.expire(later, 1 << 20),
                                b.expire(later, 1 << 20),
                                "{what}"
                            );
                            assert_eq!(a.len(), b.len(), "{what}");
                            assert_eq!(a.counts().inactive(id), b.counts().inactive(id), "{what}");
                            assert_eq!(a.counts().active(id), b.counts().active(id), "{what}");
                        }
                    }
                }
            }
        }
    }
}
