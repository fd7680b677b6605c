//! The TCP state machine against the tables of /work/shared/IPVS.md §3.1 (transcribed here
//! verbatim as markdown and parsed, independently of the kernel-style arrays in
//! `conn/state.rs`), driven through the table's public `on_packet`, for every direction, event and
//! state, normal and `secure_tcp`; and the active/inactive counts at every transition.

use std::net::{IpAddr, Ipv4Addr};

use xvs_forwarding::conn::state::{tcp, tcp_next, TcpDir, Timeouts};
use xvs_forwarding::conn::*;
use xvs_schedulers::Load;

/// IPVS.md §3.1, copied as is.
const SPEC: &str = "
| next state | NO | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|
| IN syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SR |
| IN fin | CL | CW | SS | TW | TW | TW | CL | CW | LA | LI | TW |
| IN ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| IN rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | SR |
| OUT syn | SS | ES | SS | SR | SS | SS | SS | SS | SS | LI | SR |
| OUT fin | TW | FW | SS | TW | FW | TW | CL | TW | LA | LI | TW |
| OUT ack | ES | ES | SS | ES | FW | TW | CL | CW | LA | ES | ES |
| OUT rst | CL | CL | SS | CL | CL | TW | CL | CL | CL | CL | CL |
| IO syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SR |
| IO fin | CL | FW | SS | TW | FW | TW | CL | CW | LA | LI | TW |
| IO ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| IO rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
";

/// IPVS.md: "`secure_tcp` table ... differs only in: IN syn SA→SA; IN fin SA→SA; IN ack SR→SR
/// and SA→SA; IN rst SA→CL; OUT syn SR→SA and SA→SA; IO syn row = SA,ES,ES,SR,SA,SA,SA,SA,SA,SA,SA."
const SECURE_DIFF: &[(&str, &str, &str, &str)] = &[
    ("IN", "syn", "SA", "SA"),
    ("IN", "fin", "SA", "SA"),
    ("IN", "ack", "SR", "SR"),
    ("IN", "ack", "SA", "SA"),
    ("IN", "rst", "SA", "CL"),
    ("OUT", "syn", "SR", "SA"),
    ("OUT", "syn", "SA", "SA"),
];
const SECURE_IO_SYN: &str = "SA,ES,ES,SR,SA,SA,SA,SA,SA,SA,SA";

const ABBREV: [&str; 11] = [
    "NO", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA",
];

fn state_of(s: &str) -> u8 {
    ABBREV.iter().position(|a| *a == s).expect(s) as u8
}

fn flags_of(ev: &str) -> u8 {
    match ev {
        "syn" => tcp::FLAG_SYN,
        "fin" => tcp::FLAG_FIN | tcp::FLAG_ACK,
        "ack" => tcp::FLAG_ACK,
        "rst" => tcp::FLAG_RST | tcp::FLAG_ACK,
        _ => panic!("{ev}"),
    }
}

/// (direction, event) → next states by current state.
fn spec(secure: bool) -> Vec<(String, String, [u8; 11])> {
    let mut rows = Vec::new();
    for line in SPEC
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("next state"))
    {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let mut head = cells[0].split(' ');
        let (dir, ev) = (
            head.next().unwrap().to_string(),
            head.next().unwrap().to_string(),
        );
        let mut next = [0u8; 11];
        for (i, c) in cells[1..].iter().enumerate() {
            next[i] = state_of(c);
        }
        rows.push((dir, ev, next));
    }
    assert_eq!(rows.len(), 12);
    if secure {
        for (dir, ev, next) in rows.iter_mut() {
            for (d, e, from, to) in SECURE_DIFF {
                if dir == d && ev == e {
                    next[state_of(from) as usize] = state_of(to);
                }
            }
            if dir == "IO" && ev == "syn" {
                for (i, s) in SECURE_IO_SYN.split(',').enumerate() {
                    next[i] = state_of(s);
                }
            }
        }
    }
    rows
}

fn table() -> ConnTable {
    ConnTable::new(&ConnConfig {
        capacity: 64,
        v6_capacity: 0,
        backends: 4,
        seed: 7,
    })
}

fn conn(method: Method) -> NewConn {
    NewConn {
        proto: 6,
        client: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1)),
        cport: 40000,
        vaddr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
        vport: 80,
        daddr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)),
        dport: 80,
        local: None,
        backend: BackendId(1),
        service: 0,
        method,
        control: None,
    }
}

/// Drive a fresh entry into `state` with a short path of real segments.
fn reach(t: &mut ConnTable, id: ConnId, dir_in: Direction, state: u8, now: Time) {
    // Paths valid in the IN and input-only tables alike (first hop from NO).
    use Direction::*;
    let s = |f: &str| flags_of(f);
    let path: &[(Direction, u8)] = match state {
        0 => &[],
        1 => &[(dir_in, s("syn")), (dir_in, s("ack"))],
        2 => &[(Out, s("syn"))],
        3 => &[(dir_in, s("syn"))],
        4 => &[(dir_in, s("syn")), (dir_in, s("ack")), (Out, s("fin"))],
        5 => &[(dir_in, s("syn")), (dir_in, s("fin"))],
        6 => &[(dir_in, s("rst"))],
        7 => &[(dir_in, s("syn")), (dir_in, s("ack")), (In, s("fin"))],
        8 => &[(dir_in, s("rst")), (In, s("syn")), (In, s("rst"))],
        _ => &[],
    };
    for &(d, f) in path {
        t.on_packet(id, d, f, now);
    }
}

#[test]
fn transitions_match_the_spec_tables() {
    let now = Time::from_secs(100);
    for secure in [false, true] {
        let rows = spec(secure);
        for (dir, ev, next) in &rows {
            for (from, &want) in next.iter().enumerate() {
                let from = from as u8;
                // 1. The pure function.
                let tdir = match dir.as_str() {
                    "IN" => TcpDir::In,
                    "OUT" => TcpDir::Out,
                    _ => TcpDir::InputOnly,
                };
                assert_eq!(
                    tcp_next(from, tdir, flags_of(ev), secure),
                    want,
                    "secure={secure} {dir} {ev} from {}",
                    ABBREV[from as usize]
                );
                // 2. Through the table, where a real path reaches `from` (LISTEN and SYNACK are
                //    not reachable from NONE without secure_tcp/sync; checked by 1 only).
                let mut t = table();
                t.set_secure_tcp(secure);
                let method = if dir == "IO" { Method::Dr } else { Method::Nat };
                let id = t.insert(&conn(method), now).unwrap();
                let dir_in = Direction::In;
                reach(&mut t, id, dir_in, from, now);
                let got_from = t.get(id).unwrap().state;
                if got_from != from
                    || (dir == "IO" && t.get(id).unwrap().flags & flags::NOOUTPUT == 0)
                {
                    continue;
                }
                let d = if dir == "OUT" {
                    Direction::Out
                } else {
                    Direction::In
                };
                let got = t.on_packet(id, d, flags_of(ev), now);
                assert_eq!(
                    got, want,
                    "secure={secure} {dir} {ev} from {} via on_packet",
                    ABBREV[from as usize]
                );
                // Counts: only ESTABLISHED is active; the entry always counts once.
                let c = t.counts();
                let (a, i) = (c.active(BackendId(1)), c.inactive(BackendId(1)));
                assert_eq!(
                    (a, i),
                    if want == tcp::ESTABLISHED {
                        (1, 0)
                    } else {
                        (0, 1)
                    }
                );
                assert_eq!(
                    t.expires_in(id, now),
                    Some(Timeouts::default().tcp[want as usize])
                );
            }
        }
    }
}

#[test]
fn states_reachable_through_the_table() {
    // Guard for the test above: the paths really reach their states, so step 2 is not skipped.
    // (LAST_ACK, LISTEN and SYNACK are never entered from NONE by the normal tables: only
    // self-loops lead to them.)
    let now = Time::from_secs(1);
    for (method, reachable) in [(Method::Nat, 8usize), (Method::Dr, 5)] {
        let mut n = 0;
        for s in 0..9u8 {
            let mut t = table();
            let id = t.insert(&conn(method), now).unwrap();
            reach(&mut t, id, Direction::In, s, now);
            let g = t.get(id).unwrap();
            if g.state == s && (method == Method::Nat || g.flags & flags::NOOUTPUT != 0) {
                n += 1;
            }
        }
        assert!(n >= reachable, "{method:?}: only {n} states reached");
    }
}

#[test]
fn default_timeouts_are_ipvs_defaults() {
    let t = Timeouts::default();
    let secs: Vec<u32> = t.tcp.iter().map(|ms| ms / 1000).collect();
    assert_eq!(secs, [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120]);
    assert_eq!(t.udp, 300_000);
    assert_eq!(t.other, 60_000);
}

/// SCTP through the table: a client association set up and shut down (IN/OUT), the
/// counts, the timeouts and the names; INIT retransmission and ABORT after COOKIE ECHO.
#[test]
fn sctp_association_through_the_table() {
    use xvs_forwarding::conn::state::sctp::{self, *};
    let now = Time::from_secs(5);
    let mut t = table();
    let mut c = conn(Method::Nat);
    c.proto = 132;
    let id = t.insert(&c, now).unwrap();
    let b = BackendId(1);
    let steps: &[(Direction, u8, u8, u32)] = &[
        (Direction::In, CHUNK_INIT, INIT1, 4),
        (Direction::In, CHUNK_INIT, INIT, 61),
        (Direction::Out, CHUNK_INIT_ACK, COOKIE_SENT, 61),
        (Direction::In, CHUNK_COOKIE_ECHO, COOKIE_REPLIED, 61),
        (Direction::Out, CHUNK_COOKIE_ACK, ESTABLISHED, 900),
        (Direction::In, CHUNK_DATA, ESTABLISHED, 900),
        (Direction::In, 3, ESTABLISHED, 900), // SACK counts as DATA
        (Direction::In, CHUNK_SHUTDOWN, SHUTDOWN_RECEIVED, 61),
        (Direction::Out, CHUNK_SHUTDOWN_ACK, SHUTDOWN_ACK_SENT, 61),
        (Direction::In, CHUNK_SHUTDOWN_COMPLETE, CLOSED, 61),
    ];
    for &(dir, chunk, want, secs) in steps {
        assert_eq!(
            t.on_packet(id, dir, chunk, now),
            want,
            "{dir:?} chunk {chunk}"
        );
        assert_eq!(t.expires_in(id, now), Some(secs * 1000));
        let active = t.counts().active(b);
        assert_eq!(active, (want == sctp::ESTABLISHED) as u32);
        assert_eq!(active + t.counts().inactive(b), 1);
        assert_eq!(t.get(id).unwrap().state_name(), sctp::NAMES[want as usize]);
    }
    // INIT answered by ABORT: REJECTED (4 s).
    let mut c2 = conn(Method::Nat);
    c2.proto = 132;
    c2.cport = 40001;
    let id2 = t.insert(&c2, now).unwrap();
    t.on_packet(id2, Direction::In, CHUNK_INIT, now);
    t.on_packet(id2, Direction::Out, CHUNK_INIT_ACK, now);
    let abort = effective_chunk(CHUNK_COOKIE_ECHO, Some(CHUNK_ABORT));
    assert_eq!(abort, CHUNK_ABORT);
    assert_eq!(effective_chunk(CHUNK_DATA, Some(CHUNK_ABORT)), CHUNK_DATA);
    assert_eq!(t.on_packet(id2, Direction::In, abort, now), CLOSED);
    // DR: input-only table, COOKIE ECHO straight to ESTABLISHED.
    let mut c3 = conn(Method::Dr);
    c3.proto = 132;
    c3.cport = 40002;
    let id3 = t.insert(&c3, now).unwrap();
    t.on_packet(id3, Direction::In, CHUNK_INIT, now);
    assert_eq!(
        t.on_packet(id3, Direction::In, CHUNK_COOKIE_ECHO, now),
        ESTABLISHED
    );
    assert_eq!(t.counts().active(b), 1);
}
