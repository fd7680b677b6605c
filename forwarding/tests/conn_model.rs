//! Model test: random sequences of inserts (alone or with their first packet, `open`), packets, lookups, time steps, sweeps and
//! expire_now against a plain `HashMap` model with exact expiry times, and a deterministic churn
//! run of about two million inserts that must leave the table consistent.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use xvs_forwarding::conn::state::{tcp_next, TcpDir, Timeouts};
use xvs_forwarding::conn::*;
use xvs_schedulers::Load;

const CAP: u32 = 24;
const V6CAP: u32 = 8;
const BACKENDS: u32 = 3;

#[derive(Clone, Debug)]
enum Op {
    Insert {
        client: u8,
        port: u8,
        udp: bool,
        v6: bool,
        backend: u8,
        method: u8,
        /// Inserted with its first (inbound) packet's flags through `open`.
        first: Option<u8>,
    },
    Packet {
        pick: usize,
        out: bool,
        flags: u8,
    },
    Advance {
        ms: u32,
    },
    Sweep {
        budget: u8,
    },
    ExpireNow {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (
            (0u8..6, 0u8..4, any::<bool>(), prop::bool::weighted(0.3), 0u8..4, 0u8..4),
            prop::option::of(prop::sample::select(vec![0x02u8, 0x12, 0x10, 0x11, 0x01, 0x00])),
        ).prop_map(
            |((client, port, udp, v6, backend, method), first)| Op::Insert { client, port, udp, v6, backend, method, first }
        ),
        4 => (any::<usize>(), any::<bool>(), prop::sample::select(vec![0x02u8, 0x12, 0x10, 0x11, 0x04, 0x14, 0x08, 0x01])).prop_map(
            |(pick, out, flags)| Op::Packet { pick, out, flags }
        ),
        2 => prop_oneof![0u32..50, 0u32..5_000, 0u32..400_000].prop_map(|ms| Op::Advance { ms }),
        1 => (0u8..40).prop_map(|budget| Op::Sweep { budget }),
        1 => any::<usize>().prop_map(|pick| Op::ExpireNow { pick }),
    ]
}

#[derive(Clone, Debug)]
struct M {
    id: ConnId,
    c: NewConn,
    state: u8,
    expires: u64,
    noout: bool,
}

fn addr(v6: bool, net: u8, host: u8) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            2,
            net as u16,
            0,
            0,
            0,
            0,
            host as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, net, host))
    }
}

fn in_tuple(c: &NewConn) -> Tuple {
    Tuple {
        proto: c.proto,
        src: c.client,
        sport: c.cport,
        dst: c.vaddr,
        dport: c.vport,
    }
}

fn out_tuple(c: &NewConn) -> Tuple {
    let (dst, dport) = c.local.unwrap_or((c.client, c.cport));
    Tuple {
        proto: c.proto,
        src: c.daddr,
        sport: c.dport,
        dst,
        dport,
    }
}

struct Harness {
    t: ConnTable,
    model: HashMap<Tuple, M>,
    now: u64,
    timeouts: Timeouts,
}

impl Harness {
    fn new() -> Self {
        Harness {
            t: ConnTable::new(&ConnConfig {
                capacity: CAP,
                v6_capacity: V6CAP,
                backends: BACKENDS,
                seed: 99,
            }),
            model: HashMap::new(),
            now: 1_000_000,
            timeouts: Timeouts::default(),
        }
    }

    fn time(&self) -> Time {
        Time::from_millis(self.now)
    }

    fn keys(&self) -> Vec<Tuple> {
        let mut k: Vec<Tuple> = self.model.keys().copied().collect();
        k.sort_by_key(|t| format!("{t:?}"));
        k
    }

    /// Look `key`'s connection up in the real table, checking the model's expectation, and
    /// forget the model entry if it was due.
    fn lookup(&mut self, key: &Tuple, out: bool) -> Option<(ConnId, Direction)> {
        let m = self.model.get(key).cloned();
        let tuple = match (&m, out) {
            (Some(m), true) if m.c.method.replies_through_director() => out_tuple(&m.c),
            _ => *key,
        };
        let got = self.t.lookup(&tuple, self.time());
        match m {
            Some(m) if self.now < m.expires => {
                let dir = if tuple == *key {
                    Direction::In
                } else {
                    Direction::Out
                };
                assert_eq!(got, Some((m.id, dir)), "live {key:?}");
            }
            Some(_) => {
                assert_eq!(got, None, "due {key:?} returned");
                self.model.remove(key);
            }
            None => assert_eq!(got, None, "unknown {key:?} found"),
        }
        got
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Insert {
                client,
                port,
                udp,
                v6,
                backend,
                method,
                first,
            } => {
                let method =
                    [Method::Nat, Method::Dr, Method::Tunnel, Method::FullNat][method as usize];
                let c = NewConn {
                    proto: if udp { 17 } else { 6 },
                    client: addr(v6, 2, client),
                    cport: 1000 + port as u16,
                    vaddr: addr(v6, 0, 100),
                    vport: 80,
                    daddr: addr(v6, 1, backend),
                    dport: 8080,
                    local: (method == Method::FullNat)
                        .then(|| (addr(v6, 3, 1), 2000 + client as u16 * 8 + port as u16)),
                    backend: BackendId(backend as u32),
                    service: 0,
                    method,
                    control: None,
                };
                let key = in_tuple(&c);
                if self.lookup(&key, false).is_some() {
                    return;
                }
                let v6_used = self.model.values().filter(|m| m.c.client.is_ipv6()).count() as u32;
                let fits = (self.model.len() as u32) < CAP
                    && (!v6 || v6_used < V6CAP)
                    && (backend as u32) < BACKENDS;
                let got = match first {
                    None => self.t.insert(&c, self.time()),
                    Some(flags) => self.t.open(&c, flags, self.time()),
                };
                assert_eq!(
                    got.is_some(),
                    fits,
                    "insert {c:?} with {} entries",
                    self.model.len()
                );
                if let Some(id) = got {
                    let noout = !method.replies_through_director();
                    let (state, expires) = match first {
                        None => (0, self.now + 3_000),
                        Some(flags) => {
                            // As `on_packet` of an inbound packet right after `insert`.
                            let state = if c.proto == 6 {
                                let d = if noout { TcpDir::InputOnly } else { TcpDir::In };
                                tcp_next(0, d, flags, false)
                            } else {
                                0
                            };
                            let t = self.timeouts.get(c.proto, state) as u64;
                            (state, self.now + t)
                        }
                    };
                    self.model.insert(
                        key,
                        M {
                            id,
                            c,
                            state,
                            expires,
                            noout,
                        },
                    );
                    if first.is_some() {
                        let got = self.t.get(id).expect("opened");
                        assert_eq!(got.state, state, "open {c:?}");
                        assert_eq!(got.in_pkts, 1, "open {c:?}");
                    }
                }
            }
            Op::Packet { pick, out, flags } => {
                let keys = self.keys();
                if keys.is_empty() {
                    return;
                }
                let key = keys[pick % keys.len()];
                let Some((id, dir)) = self.lookup(&key, out) else {
                    return;
                };
                let m = self.model.get_mut(&key).unwrap();
                let new = if m.c.proto == 6 {
                    let mut d = if dir == Direction::Out {
                        TcpDir::Out
                    } else {
                        TcpDir::In
                    };
                    if m.noout {
                        if dir == Direction::Out {
                            m.noout = false
                        } else {
                            d = TcpDir::InputOnly
                        }
                    }
                    tcp_next(m.state, d, flags, false)
                } else {
                    m.state
                };
                m.state = new;
                m.expires = self.now + self.timeouts.get(m.c.proto, new) as u64;
                assert_eq!(self.t.on_packet(id, dir, flags, self.time()), new);
            }
            Op::Advance { ms } => self.now += ms as u64,
            Op::Sweep { budget } => {
                let before = self.t.len();
                let removed = self.t.expire(self.time(), budget as u32);
                assert_eq!(before - self.t.len(), removed);
                // Whatever the sweep removed must have been due.
                let gone: Vec<Tuple> = self
                    .model
                    .iter()
                    .filter(|(_, m)| self.t.get(m.id).is_none())
                    .map(|(k, _)| *k)
                    .collect();
                for k in gone {
                    let m = self.model.remove(&k).unwrap();
                    assert!(
                        self.now >= m.expires,
                        "swept {k:?} {} ms early",
                        m.expires - self.now
                    );
                }
                assert_eq!(self.model.len() as u32, self.t.len());
            }
            Op::ExpireNow { pick } => {
                let keys = self.keys();
                if keys.is_empty() {
                    return;
                }
                let key = keys[pick % keys.len()];
                let id = self.model[&key].id;
                assert!(self.t.expire_now(id, self.time()));
                self.model.remove(&key);
                assert_eq!(self.t.lookup(&key, self.time()), None);
            }
        }
    }

    /// Full comparison: every model entry looked up (due ones go), then lengths and counts.
    fn compare(&mut self) {
        for k in self.keys() {
            self.lookup(&k, false);
        }
        assert_eq!(self.t.len(), self.model.len() as u32);
        for b in 0..BACKENDS {
            let id = BackendId(b);
            let mine = self.model.values().filter(|m| m.c.backend == id);
            let active = mine
                .clone()
                .filter(|m| m.c.proto == 6 && m.state == 1)
                .count() as u32;
            let total = mine.count() as u32;
            assert_eq!(self.t.counts().active(id), active, "active of {b}");
            assert_eq!(
                self.t.counts().inactive(id),
                total - active,
                "inactive of {b}"
            );
        }
        for m in self.model.values() {
            let g = self.t.get(m.id).unwrap();
            assert_eq!(g.state, m.state);
            assert_eq!(g.flags & flags::NOOUTPUT != 0, m.noout);
            assert_eq!(
                self.t.expires_in(m.id, self.time()),
                Some((m.expires - self.now) as u32)
            );
        }
        self.t.check().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn table_matches_model(ops in prop::collection::vec(op(), 1..160)) {
        let mut h = Harness::new();
        for (i, op) in ops.iter().enumerate() {
            h.apply(op);
            if i % 40 == 39 {
                h.compare();
            }
        }
        h.compare();
    }
}

/// About two million connections through a 64 K table: bursts of inserts, packets, time steps
/// and budgeted sweeps. At the end the table must be consistent and drain completely.
#[test]
fn churn_keeps_the_table_consistent() {
    let cap = 1 << 16;
    let mut t = ConnTable::new(&ConnConfig {
        capacity: cap,
        v6_capacity: 1024,
        backends: 16,
        seed: 5,
    });
    let mut now_ms: u64 = 50_000;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    t.set_timeouts(0, 0, 5);
    let mut inserted = 0u64;
    let mut full = 0u64;
    while inserted + full < 2_000_000 {
        for _ in 0..512 {
            let r = rnd();
            let c = NewConn {
                proto: if r & 1 == 0 { 6 } else { 17 },
                client: IpAddr::V4(Ipv4Addr::from((r >> 8) as u32 | 0x0A00_0000)),
                cport: (r >> 40) as u16,
                vaddr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
                vport: 80,
                daddr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, (r >> 56) as u8 & 15)),
                dport: 80,
                local: None,
                backend: BackendId((r >> 56) as u32 & 15),
                service: 0,
                method: if r & 2 == 0 { Method::Nat } else { Method::Dr },
                control: None,
            };
            let tuple = Tuple {
                proto: c.proto,
                src: c.client,
                sport: c.cport,
                dst: c.vaddr,
                dport: c.vport,
            };
            let now = Time::from_millis(now_ms);
            if t.lookup(&tuple, now).is_some() {
                continue;
            }
            // Half of them inserted with their SYN in one step (`open`).
            let opened = r & 8 == 0;
            let got = if opened {
                t.open(&c, 0x02, now)
            } else {
                t.insert(&c, now)
            };
            match got {
                Some(id) => {
                    inserted += 1;
                    // Short-lived: SYN, established, then closed by a RST or a flagless segment
                    // (CLOSE, 10 s); UDP lives 5 s.
                    if !opened {
                        t.on_packet(id, Direction::In, 0x02, now);
                    }
                    t.on_packet(id, Direction::In, 0x10, now);
                    t.on_packet(id, Direction::In, if r & 4 == 0 { 0x04 } else { 0x08 }, now);
                }
                None => full += 1,
            }
        }
        now_ms += 200;
        t.expire(Time::from_millis(now_ms), 2_048);
    }
    assert!(inserted > 1_900_000, "{inserted} inserted, {full} refused");
    t.check().unwrap();
    let mut guard = 0;
    while !t.is_empty() && guard < 100_000 {
        now_ms += 100;
        t.expire(Time::from_millis(now_ms), 4_096);
        guard += 1;
    }
    assert!(t.is_empty());
    for b in 0..16 {
        assert_eq!(t.counts().active(BackendId(b)), 0);
        assert_eq!(t.counts().inactive(BackendId(b)), 0);
    }
    t.check().unwrap();
}

#[derive(Clone, Debug)]
enum TOp {
    /// Find or create the template of client network `net`, then add a connection under it.
    Connect {
        net: u8,
        port: u8,
        backend: u8,
    },
    /// A packet on the `pick`-th live connection.
    Packet {
        pick: usize,
        flags: u8,
    },
    Advance {
        secs: u32,
    },
    Sweep {
        budget: u8,
    },
    Delete {
        pick: usize,
    },
    Invalidate {
        net: u8,
    },
    ExpireBackend {
        backend: u8,
    },
}

fn top() -> impl Strategy<Value = TOp> {
    prop_oneof![
        4 => (0u8..3, 0u8..6, 0u8..3).prop_map(|(net, port, backend)| TOp::Connect { net, port, backend }),
        3 => (any::<usize>(), prop::sample::select(vec![0x02u8, 0x10, 0x11, 0x04])).prop_map(|(pick, flags)| TOp::Packet { pick, flags }),
        3 => prop_oneof![0u32..5, 0u32..130, 0u32..1000].prop_map(|secs| TOp::Advance { secs }),
        2 => (0u8..64).prop_map(|budget| TOp::Sweep { budget }),
        1 => any::<usize>().prop_map(|pick| TOp::Delete { pick }),
        1 => (0u8..3).prop_map(|net| TOp::Invalidate { net }),
        1 => (0u8..3).prop_map(|backend| TOp::ExpireBackend { backend }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Persistence templates under random traffic: the table stays consistent (n_control equals
    /// the live controlled entries, index and wheel intact), persistconns equals the live
    /// templates, a template is never removed while it controls a live connection, and after
    /// enough idle time everything is gone.
    #[test]
    fn templates_stay_consistent(ops in prop::collection::vec(top(), 1..120)) {
        let mut t = ConnTable::new(&ConnConfig { capacity: 48, v6_capacity: 0, backends: 3, seed: 3 });
        let mut now = 10_000u64;
        let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
        let key = |net: u8| TemplateKey { proto: 6, client: IpAddr::V4(Ipv4Addr::new(198, 18, 2 + net, 0)), vaddr: vip, vport: 80 };
        let mut conns: Vec<Tuple> = Vec::new();
        for op in &ops {
            let at = Time::from_secs(now);
            match *op {
                TOp::Connect { net, port, backend } => {
                    let k = key(net);
                    let ct = match t.template_lookup(&k, at) {
                        Some(ct) => Some(ct),
                        None => t.insert_template(&k, BackendId(backend as u32),
                            IpAddr::V4(Ipv4Addr::new(198, 18, 1, backend)), 80, 0, Method::Nat, 300, at),
                    };
                    let Some(ct) = ct else { continue };
                    let b = t.get(ct).unwrap().backend;
                    let c = NewConn {
                        proto: 6,
                        client: IpAddr::V4(Ipv4Addr::new(198, 18, 2 + net, 1 + port)),
                        cport: 1000,
                        vaddr: vip,
                        vport: 80,
                        daddr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, b.0 as u8)),
                        dport: 80,
                        local: None,
                        backend: b,
                        service: 0,
                        method: Method::Nat,
                        control: Some(ct),
                    };
                    let tu = in_tuple(&c);
                    if t.lookup(&tu, at).is_some() {
                        continue;
                    }
                    if let Some(id) = t.insert(&c, at) {
                        t.on_packet(id, Direction::In, 0x02, at);
                        conns.push(tu);
                    } else {
                        t.rearm(ct, at);
                    }
                }
                TOp::Packet { pick, flags } => {
                    if conns.is_empty() { continue; }
                    let tu = conns[pick % conns.len()];
                    if let Some((id, dir)) = t.lookup(&tu, at) {
                        t.on_packet(id, dir, flags, at);
                    }
                }
                TOp::Advance { secs } => now += secs as u64,
                TOp::Sweep { budget } => { t.expire(at, budget as u32); }
                TOp::Delete { pick } => {
                    if conns.is_empty() { continue; }
                    let tu = conns[pick % conns.len()];
                    if let Some((id, _)) = t.lookup(&tu, at) {
                        prop_assert!(t.delete(id, at));
                    }
                }
                TOp::Invalidate { net } => {
                    if let Some(ct) = t.template_lookup(&key(net), at) {
                        t.invalidate_template(ct);
                    }
                }
                TOp::ExpireBackend { backend } => {
                    let mut from = 0;
                    while let Some(next) = t.expire_backend(BackendId(backend as u32), at, from, 7) {
                        from = next;
                    }
                }
            }
            t.check().map_err(TestCaseError::fail)?;
            // persistconns = live templates; every live connection's template is live.
            let listing: Vec<ConnListing> = t.list(at).collect();
            for b in 0..3 {
                let templates = listing.iter().filter(|l| l.template && t.get(l.id).unwrap().backend == BackendId(b)).count() as u32;
                prop_assert_eq!(t.counts().persistent(BackendId(b)), templates);
            }
            for l in listing.iter().filter(|l| !l.template) {
                let c = t.get(l.id).unwrap();
                let ct = c.control.expect("every connection here has a template");
                prop_assert!(t.get(ct).map(|x| x.is_template()).unwrap_or(false));
            }
        }
        // Idle long enough: connections (≤ 900 s) go, then their templates (≤ 300 s + 60 s steps).
        for _ in 0..40 {
            now += 60;
            t.expire(Time::from_secs(now), 1 << 12);
        }
        prop_assert_eq!(t.len(), 0);
        for b in 0..3 {
            prop_assert_eq!(t.counts().persistent(BackendId(b)), 0);
            prop_assert_eq!(t.counts().inactive(BackendId(b)) + t.counts().active(BackendId(b)), 0);
        }
        t.check().map_err(TestCaseError::fail)?;
    }
}
