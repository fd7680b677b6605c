//! SYN proxy fixtures (issue 16, item 1): the cookie handshake with the client, the director's
//! handshake with the backend, and sequence / timestamp / SACK / window translation in both
//! directions, for NAT and FullNAT, IPv4 and IPv6; data in the third segment and before the
//! backend answers; retransmitted ACK, RST, FIN; stale, forged and other-service cookies.

mod common;

use std::net::IpAddr;

use common::*;
use xvs_forwarding::service::{Backend, Service, ServiceKey, PROTO_TCP};
use xvs_forwarding::synproxy::{parse_options, TcpOptions};
use xvs_forwarding::testkit::{verify_checksums, Pkt};
use xvs_forwarding::wire::{parse, Packet, Parsed};
use xvs_forwarding::{DropReason, Method, Pipeline, PipelineConfig, Time, Verdict};
use xvs_schedulers::SchedFlags;

fn service(vip: IpAddr, port: u16, method: Method, backend: IpAddr) -> Service {
    Service {
        key: ServiceKey::Addr {
            proto: PROTO_TCP,
            addr: vip,
            port,
        },
        scheduler: "rr".into(),
        sched_flags: SchedFlags::NONE,
        persistence: None,
        one_packet: false,
        synproxy: true,
        conn_rate: 0,
        backends: vec![Backend {
            addr: backend,
            port: 8080,
            weight: 1,
            method,
            u_threshold: 0,
            l_threshold: 0,
            conn_rate: 0,
        }],
    }
}

struct Net {
    vip: IpAddr,
    client: IpAddr,
    backend: IpAddr,
    local: IpAddr,
}

fn v4net() -> Net {
    Net {
        vip: IpAddr::V4(VIP4),
        client: IpAddr::V4(CLIENT4),
        backend: IpAddr::V4(backend4(11)),
        local: IpAddr::V4(LOCAL4),
    }
}

fn v6net() -> Net {
    Net {
        vip: IpAddr::V6(vip6()),
        client: IpAddr::V6(client6()),
        backend: IpAddr::V6(backend6(11)),
        local: IpAddr::V6(local6()),
    }
}

fn pipeline(n: &Net, method: Method) -> Pipeline {
    let services = vec![
        service(n.vip, 80, method, n.backend),
        service(n.vip, 443, method, n.backend),
    ];
    let cfg = PipelineConfig {
        connections: 64,
        v6_connections: 64,
        local_addresses: vec![IpAddr::V4(LOCAL4), IpAddr::V6(local6())],
        ..PipelineConfig::default()
    };
    Pipeline::new(cfg, &services, vec![], network()).unwrap()
}

/// A segment as it left the director.
struct Seg {
    p: Packet,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    opts: TcpOptions,
    payload: Vec<u8>,
    frame: Vec<u8>,
}

fn seg(frame: &[u8]) -> Seg {
    verify_checksums(frame).unwrap();
    let Parsed::Ip(p) = parse(frame) else {
        panic!("not IP")
    };
    let t = &frame[p.l4..p.ip_end];
    let hlen = usize::from(t[12] >> 4) * 4;
    Seg {
        p,
        seq: u32::from_be_bytes(t[4..8].try_into().unwrap()),
        ack: u32::from_be_bytes(t[8..12].try_into().unwrap()),
        flags: t[13],
        win: u16::from_be_bytes([t[14], t[15]]),
        opts: parse_options(&t[..hlen]),
        payload: t[hlen..].to_vec(),
        frame: frame.to_vec(),
    }
}

/// MSS 1460, SACK permitted, timestamps (`tsval`, 0), NOP, window scale `ws`.
fn syn_options(tsval: u32, ws: u8) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&[0, 0, 0, 0]);
    o.extend_from_slice(&[1, 3, 3, ws]);
    o
}

fn ts_option(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

fn from_client(n: &Net, sport: u16, dport: u16) -> Pkt {
    frame_in(n.client, n.vip).tcp(sport, dport)
}

fn from_backend(n: &Net, dst: IpAddr, dport: u16) -> Pkt {
    ip(Pkt::eth(backend_mac(11), BACK_MAC), n.backend, dst)
        .ttl(64)
        .tcp(8080, dport)
}

fn t(ms: u64) -> Time {
    Time(3_600_000_000_000 + ms * 1_000_000)
}

const ISN: u32 = 1_000_000;
const BISN: u32 = 7_000_000;

/// The client's SYN and the cookie SYN-ACK; returns it.
fn syn(pipe: &mut Pipeline, n: &Net, sport: u16, ts: bool) -> Seg {
    let mut pkt = from_client(n, sport, 80)
        .syn()
        .seq_ack(ISN, 0)
        .window(64240);
    if ts {
        pkt = pkt.tcp_options(&syn_options(500, 7));
    } else {
        pkt = pkt.tcp_options(&[2, 4, 0x05, 0xb4]);
    }
    let (v, out) = process(pipe, t(0), FRONT, &pkt.build());
    assert_eq!(v, Verdict::Tx(FRONT));
    seg(&out)
}

struct Open {
    /// The director's ISN toward the client.
    cookie: u32,
    our_ts: u32,
    /// The SYN toward the backend.
    syn: Seg,
    /// The ACK toward the backend.
    ack: Seg,
}

/// Whole handshake on both sides: client SYN, cookie SYN-ACK, client ACK (with `data`),
/// director SYN, backend SYN-ACK (window scale 9, TSval 90000), director ACK.
fn open(pipe: &mut Pipeline, n: &Net, method: Method, sport: u16, data: &[u8]) -> Open {
    let sa = syn(pipe, n, sport, true);
    let cookie = sa.seq;
    let (our_ts, _) = sa.opts.ts.unwrap();
    let ack = from_client(n, sport, 80)
        .ack()
        .seq_ack(ISN + 1, cookie.wrapping_add(1))
        .window(502)
        .tcp_options(&ts_option(501, our_ts))
        .payload(data)
        .build();
    let (v, out) = process(pipe, t(1), FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK), "{:?}", pipe.counters().drops);
    let syn_out = seg(&out);
    let back_dst = if method == Method::FullNat {
        n.local
    } else {
        n.client
    };
    let lport = syn_out.p.sport;
    let mut o = vec![2, 4, 0x05, 0x78, 4, 2, 8, 10];
    o.extend_from_slice(&90_000u32.to_be_bytes());
    o.extend_from_slice(&501u32.to_be_bytes());
    o.extend_from_slice(&[1, 3, 3, 9]);
    let synack = from_backend(n, back_dst, lport)
        .syn()
        .ack()
        .seq_ack(BISN, ISN + 1)
        .window(65160)
        .tcp_options(&o)
        .build();
    let (v, out) = process(pipe, t(2), BACK, &synack);
    assert_eq!(v, Verdict::Tx(BACK));
    Open {
        cookie,
        our_ts,
        syn: syn_out,
        ack: seg(&out),
    }
}

fn state(pipe: &Pipeline, sport: u16) -> Option<&'static str> {
    pipe.connections()
        .list(t(2))
        .find(|l| l.client.port() == sport)
        .map(|l| l.state)
}

fn drained(pipe: &mut Pipeline) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    pipe.drain_fragments(|_, b| v.push(b.to_vec()));
    v
}

#[test]
fn syn_is_answered_with_a_cookie_and_nothing_is_stored() {
    for n in [v4net(), v6net()] {
        let mut pipe = pipeline(&n, Method::Nat);
        let sa = syn(&mut pipe, &n, 40000, true);
        assert_eq!(sa.p.src, n.vip);
        assert_eq!(sa.p.dst, n.client);
        assert_eq!((sa.p.sport, sa.p.dport), (80, 40000));
        assert_eq!(sa.flags, 0x12);
        assert_eq!(sa.ack, ISN + 1);
        assert_eq!(&sa.frame[..12], &[&GW_MAC[..], &FRONT_MAC[..]].concat()[..]);
        let o = sa.opts;
        assert_eq!(o.mss, Some(if n.vip.is_ipv4() { 1460 } else { 1440 }));
        assert!(o.sack_perm);
        assert_eq!(o.wscale, Some(7));
        let (tsval, tsecr) = o.ts.unwrap();
        assert_eq!(tsecr, 500);
        // The low 6 bits carry the client's options: window scale 7, SACK.
        assert_eq!(tsval & 0x3f, 7 | 0x10);
        assert!(sa.payload.is_empty());
        assert_eq!(pipe.connections().len(), 0);
        assert_eq!(pipe.counters().synproxy_syn_acks, 1);
        // Without timestamps: neither window scale nor SACK is offered.
        let sa = syn(&mut pipe, &n, 40001, false);
        assert_eq!(sa.opts.ts, None);
        assert_eq!(sa.opts.wscale, None);
        assert!(!sa.opts.sack_perm);
        assert_eq!(pipe.connections().len(), 0);
    }
}

#[test]
fn handshake_and_translation_both_directions() {
    for (n, method) in [
        (v4net(), Method::Nat),
        (v4net(), Method::FullNat),
        (v6net(), Method::Nat),
        (v6net(), Method::FullNat),
    ] {
        let mut pipe = pipeline(&n, method);
        let o = open(&mut pipe, &n, method, 41000, b"");
        // The director's SYN: client ISN, options from the cookie and the ACK.
        let s = &o.syn;
        assert_eq!(s.p.dst, n.backend);
        assert_eq!(s.p.dport, 8080);
        assert_eq!(
            s.p.src,
            if method == Method::FullNat {
                n.local
            } else {
                n.client
            }
        );
        assert_eq!((s.flags, s.seq, s.ack), (0x02, ISN, 0));
        // The client's 1460 as the cookie's table holds it (IPv6: 1440, `msstab` of IPv6).
        let mss = if n.vip.is_ipv4() { 1460 } else { 1440 };
        assert_eq!(s.opts.mss, Some(mss));
        assert!(s.opts.sack_perm);
        assert_eq!(s.opts.wscale, Some(7));
        assert_eq!(s.opts.ts, Some((501, 0)));
        // Window: the ACK's 502 << 7 (a SYN's window is not scaled).
        assert_eq!(s.win, 64256);
        // The director's ACK to the backend completes its handshake.
        let a = &o.ack;
        assert_eq!(a.p.dst, n.backend);
        assert_eq!(a.p.src, s.p.src);
        assert_eq!((a.p.sport, a.p.dport), (s.p.sport, 8080));
        assert_eq!((a.flags, a.seq, a.ack), (0x10, ISN + 1, BISN + 1));
        assert_eq!(a.opts.ts, Some((501, 90_000)));
        assert_eq!(&a.frame[..6], &backend_mac(11));
        assert_eq!(state(&pipe, 41000), Some("ESTABLISHED"));
        let c = pipe.counters();
        assert_eq!((c.synproxy_opened, c.synproxy_established), (1, 1));

        // Backend → client: seq + delta, TSval + ts_delta, window 100 << 9 >> 7.
        let back_dst = a.p.src;
        let lport = a.p.sport;
        let data = from_backend(&n, back_dst, lport)
            .ack()
            .psh()
            .seq_ack(BISN + 1, ISN + 1)
            .window(100)
            .tcp_options(&ts_option(90_005, 501))
            .payload(b"HTTP/1.1 200 OK\r\n")
            .build();
        let (v, out) = process(&mut pipe, t(3), BACK, &data);
        assert_eq!(v, Verdict::Tx(FRONT));
        let d = seg(&out);
        assert_eq!((d.p.src, d.p.dst), (n.vip, n.client));
        assert_eq!((d.p.sport, d.p.dport), (80, 41000));
        assert_eq!((d.seq, d.ack), (o.cookie.wrapping_add(1), ISN + 1));
        assert_eq!(d.opts.ts, Some((o.our_ts + 5, 501)));
        assert_eq!(d.win, 400);
        assert_eq!(d.payload, b"HTTP/1.1 200 OK\r\n");

        // Client → backend: ack − delta, SACK − delta, TSecr − ts_delta, window unchanged.
        let c0 = o.cookie.wrapping_add(1);
        let mut opts = ts_option(502, o.our_ts + 5);
        opts.extend_from_slice(&[1, 1, 5, 10]);
        opts.extend_from_slice(&(c0.wrapping_add(100)).to_be_bytes());
        opts.extend_from_slice(&(c0.wrapping_add(200)).to_be_bytes());
        let pkt = from_client(&n, 41000, 80)
            .ack()
            .seq_ack(ISN + 1, c0.wrapping_add(17))
            .window(300)
            .tcp_options(&opts)
            .payload(b"GET / HTTP/1.1\r\n\r\n")
            .build();
        let (v, out) = process(&mut pipe, t(4), FRONT, &pkt);
        assert_eq!(v, Verdict::Tx(BACK));
        let u = seg(&out);
        assert_eq!((u.p.dst, u.p.dport), (n.backend, 8080));
        assert_eq!((u.seq, u.ack), (ISN + 1, BISN + 1 + 17));
        assert_eq!(u.opts.ts, Some((502, 90_005)));
        let (at, cnt) = u.opts.sack_at.unwrap();
        assert_eq!(cnt, 1);
        let tcp = &u.frame[u.p.l4..];
        let edge = |i| u32::from_be_bytes(tcp[at + i..at + i + 4].try_into().unwrap());
        assert_eq!((edge(0), edge(4)), (BISN + 1 + 100, BISN + 1 + 200));
        assert_eq!(u.win, 300);
        assert_eq!(u.payload, b"GET / HTTP/1.1\r\n\r\n");

        // FIN from the client, FIN-ACK from the backend, last ACK: the IPVS states follow.
        let fin = from_client(&n, 41000, 80)
            .fin()
            .ack()
            .seq_ack(ISN + 19, c0.wrapping_add(17))
            .build();
        let (v, out) = process(&mut pipe, t(5), FRONT, &fin);
        assert_eq!(v, Verdict::Tx(BACK));
        assert_eq!(seg(&out).ack, BISN + 1 + 17);
        assert_eq!(state(&pipe, 41000), Some("CLOSE_WAIT"));
        let finack = from_backend(&n, back_dst, lport)
            .fin()
            .ack()
            .seq_ack(BISN + 18, ISN + 20)
            .build();
        let (v, out) = process(&mut pipe, t(6), BACK, &finack);
        assert_eq!(v, Verdict::Tx(FRONT));
        assert_eq!(seg(&out).seq, c0.wrapping_add(17));
        assert_eq!(state(&pipe, 41000), Some("TIME_WAIT"));
        pipe.connections().check().unwrap();
    }
}

#[test]
fn data_in_the_third_segment_and_before_the_backend_answers_is_held_then_sent() {
    for method in [Method::Nat, Method::FullNat] {
        let n = v4net();
        let mut pipe = pipeline(&n, method);
        let sa = syn(&mut pipe, &n, 42000, true);
        let cookie = sa.seq;
        let (our_ts, _) = sa.opts.ts.unwrap();
        let c0 = cookie.wrapping_add(1);
        // The third segment carries the request's first part.
        let ack = from_client(&n, 42000, 80)
            .ack()
            .psh()
            .seq_ack(ISN + 1, c0)
            .tcp_options(&ts_option(501, our_ts))
            .payload(b"GET / HTTP/1.1\r\n")
            .build();
        let (v, out) = process(&mut pipe, t(1), FRONT, &ack);
        assert_eq!(v, Verdict::Tx(BACK));
        let s = seg(&out);
        assert_eq!(s.flags, 0x02);
        assert!(s.payload.is_empty(), "the SYN carries no data");
        assert_eq!(state(&pipe, 42000), Some("SYN_SENT"));
        // A retransmitted bare ACK while waiting: dropped, nothing sent.
        let dup = from_client(&n, 42000, 80)
            .ack()
            .seq_ack(ISN + 1, c0)
            .tcp_options(&ts_option(501, our_ts))
            .build();
        let (v, _) = process(&mut pipe, t(1), FRONT, &dup);
        assert_eq!(v, Verdict::Drop(DropReason::SynproxyPending));
        // The rest of the request comes before the backend answers: held.
        let more = from_client(&n, 42000, 80)
            .ack()
            .psh()
            .seq_ack(ISN + 17, c0)
            .tcp_options(&ts_option(502, our_ts))
            .payload(b"Host: x\r\n\r\n")
            .build();
        let (v, _) = process(&mut pipe, t(1), FRONT, &more);
        assert_eq!(v, Verdict::Drop(DropReason::SynproxyHeld));
        assert_eq!(pipe.pending_fragments(), 0);
        // The backend answers: our ACK, then the two held segments, translated.
        let lport = s.p.sport;
        let back_dst = s.p.src;
        let mut o = vec![2, 4, 0x05, 0xb4, 1, 1, 8, 10];
        o.extend_from_slice(&90_000u32.to_be_bytes());
        o.extend_from_slice(&501u32.to_be_bytes());
        let synack = from_backend(&n, back_dst, lport)
            .syn()
            .ack()
            .seq_ack(BISN, ISN + 1)
            .tcp_options(&o)
            .build();
        let (v, out) = process(&mut pipe, t(2), BACK, &synack);
        assert_eq!(v, Verdict::Tx(BACK));
        assert_eq!(seg(&out).flags, 0x10);
        let held = drained(&mut pipe);
        assert_eq!(held.len(), 2);
        let a = seg(&held[0]);
        let b = seg(&held[1]);
        assert_eq!((a.p.dst, a.p.dport, a.p.sport), (n.backend, 8080, lport));
        assert_eq!((a.seq, a.ack), (ISN + 1, BISN + 1));
        assert_eq!(a.payload, b"GET / HTTP/1.1\r\n");
        assert_eq!(a.opts.ts, Some((501, 90_000)));
        assert_eq!((b.seq, b.ack), (ISN + 17, BISN + 1));
        assert_eq!(b.payload, b"Host: x\r\n\r\n");
        assert_eq!(pipe.counters().synproxy_released, 2);
        // The retransmitted ACK is translated like any segment now.
        let (v, out) = process(&mut pipe, t(3), FRONT, &dup);
        assert_eq!(v, Verdict::Tx(BACK));
        assert_eq!(seg(&out).ack, BISN + 1);
        assert_eq!(pipe.counters().drops.get(DropReason::SynproxyHeld), 1);
    }
}

#[test]
fn stale_forged_and_other_service_cookies_are_rejected() {
    let n = v4net();
    let mut pipe = pipeline(&n, Method::Nat);
    let sa = syn(&mut pipe, &n, 43000, false);
    let c0 = sa.seq.wrapping_add(1);
    let ack = |dport: u16, seq: u32, ack: u32| {
        from_client(&n, 43000, dport)
            .ack()
            .seq_ack(seq, ack)
            .build()
    };
    let bad = Verdict::Drop(DropReason::SynproxyBadCookie);
    // Three minutes later: stale.
    let later = Time(t(0).0 + 180_000_000_000);
    assert_eq!(
        process(&mut pipe, later, FRONT, &ack(80, ISN + 1, c0)).0,
        bad
    );
    // Forged: another acknowledgement number, or another sequence number (a difference of
    // 1..3 would only move the MSS index, as with Linux's cookies).
    assert_eq!(
        process(&mut pipe, t(1), FRONT, &ack(80, ISN + 1, c0 ^ 0x40)).0,
        bad
    );
    assert_eq!(
        process(&mut pipe, t(1), FRONT, &ack(80, ISN + 0x10001, c0)).0,
        bad
    );
    // The same cookie on another service of the same VIP.
    assert_eq!(
        process(&mut pipe, t(1), FRONT, &ack(443, ISN + 1, c0)).0,
        bad
    );
    // Under another director secret.
    let mut other = {
        let cfg = PipelineConfig {
            connections: 64,
            cookie_secret: xvs_forwarding::synproxy::cookie::CookieSecret([9, 9, 9, 9]),
            ..PipelineConfig::default()
        };
        Pipeline::new(
            cfg,
            &[service(n.vip, 80, Method::Nat, n.backend)],
            vec![],
            network(),
        )
        .unwrap()
    };
    assert_eq!(
        process(&mut other, t(1), FRONT, &ack(80, ISN + 1, c0)).0,
        bad
    );
    // A stray RST or FIN without a connection.
    let rst = from_client(&n, 43000, 80).rst().seq_ack(ISN + 1, 0).build();
    assert_eq!(process(&mut pipe, t(1), FRONT, &rst).0, bad);
    assert_eq!(pipe.connections().len(), 0);
    assert_eq!(pipe.counters().drops.get(DropReason::SynproxyBadCookie), 5);
    // One minute later the real one still works, once.
    let (v, out) = process(
        &mut pipe,
        Time(t(0).0 + 60_000_000_000),
        FRONT,
        &ack(80, ISN + 1, c0),
    );
    assert_eq!(v, Verdict::Tx(BACK));
    let s = seg(&out);
    // No timestamps: the SYN carries the MSS only.
    assert_eq!(s.opts.mss, Some(1460));
    assert_eq!(s.opts.ts, None);
    assert_eq!(s.opts.wscale, None);
    assert!(!s.opts.sack_perm);
    assert_eq!(pipe.connections().len(), 1);
}

#[test]
fn backend_refusal_resets_the_client() {
    let n = v4net();
    let mut pipe = pipeline(&n, Method::Nat);
    let sa = syn(&mut pipe, &n, 44000, false);
    let c0 = sa.seq.wrapping_add(1);
    let ack = from_client(&n, 44000, 80)
        .ack()
        .seq_ack(ISN + 1, c0)
        .build();
    let (v, _) = process(&mut pipe, t(1), FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK));
    let rst = from_backend(&n, n.client, 44000)
        .rst()
        .ack()
        .seq_ack(0, ISN + 1)
        .build();
    let (v, out) = process(&mut pipe, t(2), BACK, &rst);
    assert_eq!(v, Verdict::Tx(FRONT));
    let r = seg(&out);
    assert_eq!((r.p.src, r.p.sport, r.p.dst), (n.vip, 80, n.client));
    assert_eq!(r.seq, c0, "in the client's window");
    assert_eq!(r.flags & 0x04, 0x04);
    assert_eq!(state(&pipe, 44000), Some("CLOSE"));
    // A backend segment that is not a SYN-ACK for our SYN is not forwarded while waiting.
    let sa = syn(&mut pipe, &n, 44001, false);
    let ack = from_client(&n, 44001, 80)
        .ack()
        .seq_ack(ISN + 1, sa.seq.wrapping_add(1))
        .build();
    process(&mut pipe, t(1), FRONT, &ack);
    let wrong = from_backend(&n, n.client, 44001)
        .syn()
        .ack()
        .seq_ack(BISN, ISN + 5)
        .build();
    let (v, _) = process(&mut pipe, t(2), BACK, &wrong);
    assert_eq!(v, Verdict::Drop(DropReason::SynproxyPending));
    assert_eq!(state(&pipe, 44001), Some("SYN_SENT"));
}

#[test]
fn client_rst_after_the_handshake_is_translated() {
    let n = v4net();
    let mut pipe = pipeline(&n, Method::Nat);
    let o = open(&mut pipe, &n, Method::Nat, 45000, b"");
    let rst = from_client(&n, 45000, 80)
        .rst()
        .ack()
        .seq_ack(ISN + 1, o.cookie.wrapping_add(1))
        .build();
    let (v, out) = process(&mut pipe, t(3), FRONT, &rst);
    assert_eq!(v, Verdict::Tx(BACK));
    let r = seg(&out);
    assert_eq!((r.seq, r.ack), (ISN + 1, BISN + 1));
    assert_eq!(state(&pipe, 45000), Some("CLOSE"));
}

#[test]
fn a_flood_of_syns_creates_no_entries() {
    let n = v4net();
    let mut pipe = pipeline(&n, Method::Nat);
    for i in 0..5000u32 {
        let src = IpAddr::V4(std::net::Ipv4Addr::from_bits(0xC612_4000 | (i & 0x3fff)));
        let f = frame_in(src, n.vip)
            .tcp(1024 + (i >> 14) as u16, 80)
            .syn()
            .seq_ack(i, 0)
            .build();
        let (v, _) = process(&mut pipe, t(0), FRONT, &f);
        assert_eq!(v, Verdict::Tx(FRONT));
    }
    assert_eq!(pipe.connections().len(), 0);
    // A real client still gets through, whatever the table size.
    let o = open(&mut pipe, &n, Method::Nat, 46000, b"");
    assert_eq!(o.ack.flags, 0x10);
    assert_eq!(pipe.connections().len(), 1);
    assert_eq!(pipe.counters().synproxy_syn_acks, 5001);
}

#[test]
fn a_lost_syn_to_the_backend_is_sent_again_when_the_client_retransmits() {
    let n = v4net();
    let mut pipe = pipeline(&n, Method::Nat);
    let sa = syn(&mut pipe, &n, 47000, true);
    let (our_ts, _) = sa.opts.ts.unwrap();
    let c0 = sa.seq.wrapping_add(1);
    let get = from_client(&n, 47000, 80)
        .ack()
        .psh()
        .seq_ack(ISN + 1, c0)
        .tcp_options(&ts_option(501, our_ts))
        .payload(b"GET / HTTP/1.1\r\n\r\n")
        .build();
    let (v, first) = process(&mut pipe, t(1), FRONT, &get);
    assert_eq!(v, Verdict::Tx(BACK));
    // That SYN is lost; 100 ms later the client's retransmission is only held.
    let (v, _) = process(&mut pipe, t(101), FRONT, &get);
    assert_eq!(v, Verdict::Drop(DropReason::SynproxyHeld));
    // 300 ms later it is held and also becomes the SYN again.
    let (v, again) = process(&mut pipe, t(301), FRONT, &get);
    assert_eq!(v, Verdict::Tx(BACK));
    let (a, b) = (seg(&first), seg(&again));
    assert_eq!(
        (b.flags, b.seq, b.opts.mss, b.opts.ts),
        (0x02, ISN, a.opts.mss, a.opts.ts)
    );
    assert_eq!((b.p.src, b.p.sport, b.p.dst), (a.p.src, a.p.sport, a.p.dst));
    assert_eq!(pipe.counters().synproxy_syn_resent, 1);
    assert!(b.payload.is_empty());
}

fn pipeline_with(n: &Net, method: Method, retries: u8, interval_ms: u32) -> Pipeline {
    let cfg = PipelineConfig {
        connections: 64,
        v6_connections: 64,
        local_addresses: vec![IpAddr::V4(LOCAL4), IpAddr::V6(local6())],
        defense: xvs_forwarding::defense::DefenseConfig {
            synproxy_syn_retries: retries,
            synproxy_syn_interval_ms: interval_ms,
            ..Default::default()
        },
        ..PipelineConfig::default()
    };
    Pipeline::new(
        cfg,
        &[service(n.vip, 80, method, n.backend)],
        vec![],
        network(),
    )
    .unwrap()
}

/// Client SYN at t(0), its ACK with a request at t(1): the director's first SYN and the
/// cookie.
fn pending(pipe: &mut Pipeline, n: &Net, sport: u16) -> (Seg, u32) {
    let sa = syn(pipe, n, sport, true);
    let (our_ts, _) = sa.opts.ts.unwrap();
    let get = from_client(n, sport, 80)
        .ack()
        .psh()
        .seq_ack(ISN + 1, sa.seq.wrapping_add(1))
        .tcp_options(&ts_option(501, our_ts))
        .payload(b"GET / HTTP/1.1\r\n\r\n")
        .build();
    let (v, out) = process(pipe, t(1), FRONT, &get);
    assert_eq!(v, Verdict::Tx(BACK));
    (seg(&out), sa.seq)
}

#[test]
fn the_director_resends_its_syn_and_resets_the_client_after_the_last_retry() {
    for (n, method) in [
        (v4net(), Method::Nat),
        (v4net(), Method::FullNat),
        (v6net(), Method::Nat),
        (v6net(), Method::FullNat),
    ] {
        let mut pipe = pipeline(&n, method);
        let sport = 48000;
        let (first, cookie) = pending(&mut pipe, &n, sport);
        // Not yet due.
        pipe.housekeeping(t(1000), 64);
        assert!(drained(&mut pipe).is_empty());
        // Defaults: 3 retries, 1 s apart, each the same SYN as the first.
        for k in 1..=3u64 {
            pipe.housekeeping(t(1 + 1000 * k), 64);
            let out = drained(&mut pipe);
            assert_eq!(out.len(), 1, "{method:?} retry {k}");
            let s = seg(&out[0]);
            assert_eq!(&s.frame[..12], &first.frame[..12], "MACs");
            assert_eq!(
                (s.p.src, s.p.sport, s.p.dst, s.p.dport),
                (first.p.src, first.p.sport, first.p.dst, first.p.dport)
            );
            assert_eq!(
                (s.flags, s.seq, s.ack, s.win, s.opts.mss, s.opts.ts),
                (0x02, ISN, 0, first.win, first.opts.mss, first.opts.ts)
            );
            assert_eq!(
                (s.opts.wscale, s.opts.sack_perm),
                (first.opts.wscale, first.opts.sack_perm)
            );
            assert!(s.payload.is_empty());
            assert_eq!(pipe.counters().synproxy_syn_retried, k);
            assert_eq!(state(&pipe, sport), Some("SYN_SENT"));
        }
        // One interval after the last retry: a RST to the client, in its sequence space.
        pipe.housekeeping(t(3999), 64);
        assert!(drained(&mut pipe).is_empty());
        pipe.housekeeping(t(4001), 64);
        let out = drained(&mut pipe);
        assert_eq!(out.len(), 1);
        let r = seg(&out[0]);
        assert_eq!(&r.frame[..12], &[&GW_MAC[..], &FRONT_MAC[..]].concat()[..]);
        assert_eq!((r.p.src, r.p.sport), (n.vip, 80));
        assert_eq!((r.p.dst, r.p.dport), (n.client, sport));
        assert_eq!(
            (r.flags, r.seq, r.ack),
            (0x14, cookie.wrapping_add(1), ISN + 1)
        );
        assert_eq!(pipe.counters().synproxy_gave_up, 1);
        assert_eq!(state(&pipe, sport), Some("CLOSE"));
        // Later segments of either side are dropped and counted; no more timers.
        let late = from_client(&n, sport, 80)
            .ack()
            .seq_ack(ISN + 1, cookie.wrapping_add(1))
            .build();
        let (v, _) = process(&mut pipe, t(4100), FRONT, &late);
        assert_eq!(v, Verdict::Drop(DropReason::SynproxyGaveUp));
        let back_dst = first.p.src;
        let synack = from_backend(&n, back_dst, first.p.sport)
            .syn()
            .ack()
            .seq_ack(BISN, ISN + 1)
            .build();
        let (v, _) = process(&mut pipe, t(4200), BACK, &synack);
        assert_eq!(v, Verdict::Drop(DropReason::SynproxyGaveUp));
        pipe.housekeeping(t(20_000), 64);
        assert!(drained(&mut pipe).is_empty());
        assert_eq!(pipe.counters().synproxy_syn_retried, 3);
        assert_eq!(pipe.counters().drops.get(DropReason::SynproxyGaveUp), 2);
    }
}

#[test]
fn an_answering_backend_stops_the_timer_and_settings_are_honoured() {
    let n = v4net();
    // The backend answers before the first retry: nothing is sent again.
    let mut pipe = pipeline(&n, Method::Nat);
    open(&mut pipe, &n, Method::Nat, 49000, b"");
    for ms in [1001, 2001, 3001, 4001, 9000] {
        pipe.housekeeping(t(ms), 64);
        assert!(drained(&mut pipe).is_empty());
    }
    assert_eq!(state(&pipe, 49000), Some("ESTABLISHED"));
    let c = pipe.counters();
    assert_eq!((c.synproxy_syn_retried, c.synproxy_gave_up), (0, 0));

    // One retry 200 ms apart; the backend answers the retry, after which the held request
    // follows the ACK.
    let mut pipe = pipeline_with(&n, Method::Nat, 1, 200);
    let (first, _) = pending(&mut pipe, &n, 49001);
    pipe.housekeeping(t(150), 64);
    assert!(drained(&mut pipe).is_empty());
    pipe.housekeeping(t(201), 64);
    let out = drained(&mut pipe);
    assert_eq!(out.len(), 1);
    assert_eq!(seg(&out[0]).flags, 0x02);
    let synack = from_backend(&n, n.client, first.p.sport)
        .syn()
        .ack()
        .seq_ack(BISN, ISN + 1)
        .build();
    let (v, out) = process(&mut pipe, t(250), BACK, &synack);
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(seg(&out).flags, 0x10);
    let held = drained(&mut pipe);
    assert_eq!(held.len(), 1);
    assert_eq!(seg(&held[0]).payload, b"GET / HTTP/1.1\r\n\r\n");
    pipe.housekeeping(t(401), 64);
    assert!(drained(&mut pipe).is_empty());
    assert_eq!(pipe.counters().synproxy_gave_up, 0);

    // No retries: the client is reset one interval after the only SYN.
    let mut pipe = pipeline_with(&n, Method::Nat, 0, 300);
    pending(&mut pipe, &n, 49002);
    pipe.housekeeping(t(301), 64);
    let out = drained(&mut pipe);
    assert_eq!(out.len(), 1);
    assert_eq!(seg(&out[0]).flags, 0x14);
    assert_eq!(pipe.counters().synproxy_syn_retried, 0);
    assert_eq!(pipe.counters().synproxy_gave_up, 1);
}

/// The packet quoted in the ICMP error `frame`, behind an Ethernet header of the same type
/// (so that `seg` checks its checksums when it is whole).
fn quoted(frame: &[u8]) -> Vec<u8> {
    let Parsed::Ip(p) = parse(frame) else {
        panic!("not IP")
    };
    let mut f = frame[..14].to_vec();
    f.extend_from_slice(&frame[p.l4 + 8..p.ip_end]);
    f
}

#[test]
fn icmp_errors_quote_the_receivers_sequence_numbers() {
    for (n, method) in [
        (v4net(), Method::Nat),
        (v4net(), Method::FullNat),
        (v6net(), Method::Nat),
        (v6net(), Method::FullNat),
    ] {
        let v6 = n.vip.is_ipv6();
        let mut pipe = pipeline(&n, method);
        let sport = 50000;
        let o = open(&mut pipe, &n, method, sport, b"");
        let c0 = o.cookie.wrapping_add(1);
        let (back_dst, lport) = (o.ack.p.src, o.ack.p.sport);
        // The client's request, as the client sent it and as the backend got it.
        let mut opts = ts_option(502, o.our_ts);
        opts.extend_from_slice(&[1, 1, 5, 10]);
        opts.extend_from_slice(&c0.wrapping_add(100).to_be_bytes());
        opts.extend_from_slice(&c0.wrapping_add(200).to_be_bytes());
        let request = from_client(&n, sport, 80)
            .ack()
            .psh()
            .seq_ack(ISN + 1, c0)
            .tcp_options(&opts)
            .payload(b"GET / HTTP/1.1\r\n\r\n")
            .build();
        let (v, out) = process(&mut pipe, t(3), FRONT, &request);
        assert_eq!(v, Verdict::Tx(BACK));
        let to_backend = seg(&out);
        assert_eq!(to_backend.ack, BISN + 1, "translated on the way");
        // A router on the backend's side: too big (IPv4 3/4, IPv6 2/0, MTU 1400), quoting the
        // whole segment.
        let (ty, code) = if v6 { (2, 0) } else { (3, 4) };
        let l3 = to_backend.p.l3;
        let err = ip(Pkt::eth(backend_mac(11), BACK_MAC), n.backend, back_dst)
            .ttl(64)
            .icmp_error(ty, code, 1400, &to_backend.frame[l3..])
            .build();
        let (v, out) = process(&mut pipe, t(4), BACK, &err);
        assert_eq!(v, Verdict::Tx(FRONT), "{method:?} v6={v6}");
        verify_checksums(&out).unwrap();
        let qf = quoted(&out);
        let Parsed::Ip(qp) = parse(&qf) else {
            panic!("quote")
        };
        assert_eq!((qp.src, qp.sport), (n.client, sport));
        assert_eq!((qp.dst, qp.dport), (n.vip, 80));
        // The client's own segment again: ack, SACK edges, TSecr; all but the checksum,
        // which (as IPVS does) still covers the backend-side addresses and ports.
        let orig = seg(&request);
        let (ol4, ql4) = (orig.p.l4, qp.l4);
        let (q_tcp, o_tcp) = (&qf[ql4..qp.ip_end], &orig.frame[ol4..orig.p.ip_end]);
        assert_eq!(
            &q_tcp[..16],
            &o_tcp[..16],
            "the quoted header is the client's"
        );
        assert_eq!(
            &q_tcp[18..],
            &o_tcp[18..],
            "the quoted options and data are the client's"
        );
        assert_checksum_follows(&to_backend, q_tcp);

        // The backend's answer as the client got it, and a client-side unreachable about it.
        let answer = from_backend(&n, back_dst, lport)
            .ack()
            .psh()
            .seq_ack(BISN + 1, ISN + 20)
            .window(100)
            .tcp_options(&ts_option(90_005, 502))
            .payload(b"HTTP/1.1 200 OK\r\n")
            .build();
        let (v, out) = process(&mut pipe, t(5), BACK, &answer);
        assert_eq!(v, Verdict::Tx(FRONT));
        let to_client = seg(&out);
        assert_eq!(to_client.seq, c0);
        let router: IpAddr = if v6 {
            "2001:2:ff::1".parse().unwrap()
        } else {
            "198.18.100.1".parse().unwrap()
        };
        let (unreach, ucode) = if v6 { (1, 3) } else { (3, 1) };
        let l3 = to_client.p.l3;
        let whole = &to_client.frame[l3..];
        // IPv4's minimum quote (header + 8 bytes: ports and sequence number), and the whole.
        let short = &to_client.frame[l3..to_client.p.l4 + 8];
        for quote in [whole, short] {
            let err = frame_in(router, n.vip)
                .icmp_error(unreach, ucode, 0, quote)
                .build();
            let (v, out) = process(&mut pipe, t(6), FRONT, &err);
            assert_eq!(v, Verdict::Tx(BACK));
            verify_checksums(&out).unwrap();
            let qf = quoted(&out);
            // A cut quote does not parse as a packet: its header is read in place.
            let l4 = if v6 {
                54
            } else {
                14 + usize::from(qf[14] & 0xf) * 4
            };
            let tcp = &qf[l4..];
            let port = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
            assert_eq!((port(0), port(2)), (8080, lport));
            if let Parsed::Ip(qp) = parse(&qf) {
                assert_eq!((qp.src, qp.dst), (n.backend, back_dst));
            } else {
                assert_eq!(quote.len(), short.len());
            }
            assert_eq!(
                u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
                BISN + 1,
                "the backend's own sequence number"
            );
            if quote.len() == whole.len() {
                let o = parse_options(&tcp[..usize::from(tcp[12] >> 4) * 4]);
                assert_eq!(u32::from_be_bytes(tcp[8..12].try_into().unwrap()), ISN + 20);
                assert_eq!(o.ts, Some((90_005, 502)));
                assert!(tcp.ends_with(b"HTTP/1.1 200 OK\r\n"));
                assert_checksum_follows(&to_client, tcp);
            }
        }
    }
}

/// The quoted TCP segment `quoted_tcp`, put back into the segment `sent` as the director sent
/// it (its addresses and ports), has a valid checksum: the translation of the quote kept the
/// checksum in step with the fields it changed.
fn assert_checksum_follows(sent: &Seg, quoted_tcp: &[u8]) {
    let mut f = sent.frame[..sent.p.l4].to_vec();
    f.extend_from_slice(&sent.frame[sent.p.l4..sent.p.l4 + 4]);
    f.extend_from_slice(&quoted_tcp[4..]);
    assert_eq!(f.len(), sent.frame.len());
    verify_checksums(&f).unwrap();
}
