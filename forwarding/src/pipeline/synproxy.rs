//! The SYN proxy in the pipeline (the protocol and its sources: `crate::synproxy`).
//!
//! * A segment to a SYN-proxied service without a connection: a SYN is answered in place with
//!   a cookie SYN-ACK ([`Pipeline::synproxy_new`]); an ACK with a valid cookie creates the
//!   connection and is turned into the director's SYN toward the backend (its data, if any,
//!   is held first); anything else is dropped (`synproxy_bad_cookie`).
//! * A segment of a SYN-proxied connection ([`Pipeline::synproxy_conn`]): before the backend
//!   answered, its SYN-ACK becomes the ACK that completes the backend's handshake and the held
//!   segments follow (queued with the extra frames, [`Pipeline::drain_fragments`]); client data
//!   is held; after that, every segment is translated and then forwarded as usual.
//!
//! * The director's own retry timer ([`Pipeline::synproxy_timers`], from housekeeping; DPVS
//!   resends its saved SYN from the connection's timer, `conn_expire`, `syn_retry` times):
//!   a connection whose backend has not answered `synproxy_syn_interval_ms` after the SYN gets
//!   the SYN again, up to `synproxy_syn_retries` times; one interval after the last, the client
//!   gets a RST in its sequence space, the connection goes to CLOSE and its later segments are
//!   dropped (`synproxy_gave_up`). The frames are built from the connection's entry and queued
//!   with the extra frames ([`Pipeline::drain_fragments`]). Every timer is due one interval
//!   after it was queued, so the queue is in due order and each call only looks at its front.
//!
//! Memory: the per-connection state is one [`ProxyConn`] per table slot (28 bytes × capacity,
//! allocated at the first SYN to a SYN-proxied service); held segments live in a fixed pool of
//! [`HOLD_SLOTS`] × [`HOLD_BYTES`] bytes; the timer queue holds at most one 16-byte entry per
//! table slot (grown on demand). No allocation per packet beyond the queue's growth.

use super::{Pipeline, Target};
use crate::conn::state::tcp;
use crate::conn::{ConnId, Direction};
use crate::service::ServiceId;
use crate::synproxy::cookie::{self, CookieTuple, TsOptions};
use crate::synproxy::{
    flags as pf, parse_options, translate, write_syn_options, write_ts_option, ProxyConn,
    NO_WSCALE, WSCALE,
};
use crate::wire::{checksum, parse, proto, tcp_flags, Frag, Packet, Parsed};
use crate::{DropReason, Frame, PortId, Time, Verdict};
use std::net::IpAddr;

/// Segments the hold keeps at once (all connections of a worker together).
pub const HOLD_SLOTS: usize = 256;
/// Largest held frame.
pub const HOLD_BYTES: usize = 2048;
/// Most segments held for one connection.
const HOLD_PER_CONN: u8 = 16;
/// A held segment whose backend has not answered within this time is discarded (the client
/// retransmits it).
const HOLD_MS: u32 = 3_000;
/// Least time between two SYNs to the backend for one connection.
const SYN_RESEND_MS: u32 = 200;
/// Headroom of the frame a held segment is rewritten in (a tunnel header never applies: NAT
/// and FullNAT only).
const ROOM: usize = 64;

/// Timers looked at per housekeeping call.
const TIMER_BUDGET: usize = 256;

/// A retry timer of the director's SYN to a backend.
#[derive(Clone, Copy, Debug)]
struct Retry {
    /// Connection slot.
    slot: u32,
    /// The connection's cookie (a reused slot is not another connection's timer).
    cookie: u32,
    /// When it is due (wrapping ms).
    due: u32,
    /// SYNs already sent again.
    tries: u8,
    /// Where the client's ACK came in (for ICMP answers of the rewrite).
    ingress: PortId,
}

#[derive(Clone, Copy, Debug, Default)]
struct HeldMeta {
    /// Connection slot + 1 (0: free).
    conn: u32,
    /// The connection's cookie (a reused slot does not take another connection's segments).
    cookie: u32,
    len: u16,
    ingress: PortId,
    at: u32,
    order: u32,
}

/// The SYN proxy's state in one pipeline.
#[derive(Debug, Default)]
pub(super) struct Proxy {
    conns: Vec<ProxyConn>,
    held: Vec<HeldMeta>,
    bytes: Vec<u8>,
    scratch: Vec<u8>,
    order: u32,
    /// Retry timers, in due order.
    retries: std::collections::VecDeque<Retry>,
}

impl Proxy {
    pub(super) fn has_timers(&self) -> bool {
        !self.retries.is_empty()
    }

    /// Whether the timer `r` still belongs to a connection waiting for its backend.
    fn waiting(&self, r: &Retry) -> bool {
        self.conns
            .get(r.slot as usize)
            .is_some_and(|st| st.cookie == r.cookie && st.flags & (pf::OPEN | pf::FAILED) == 0)
    }

    /// Queue a timer; at most one entry per table slot (stale entries at the front make room).
    /// False when the queue is full of live timers.
    fn arm(&mut self, r: Retry) -> bool {
        while self.retries.len() >= self.conns.len() {
            match self.retries.front() {
                Some(f) if !self.waiting(f) => {
                    self.retries.pop_front();
                }
                _ => return false,
            }
        }
        self.retries.push_back(r);
        true
    }

    fn ensure(&mut self, capacity: u32) {
        if self.conns.is_empty() {
            self.conns = vec![ProxyConn::default(); capacity as usize];
            self.held = vec![HeldMeta::default(); HOLD_SLOTS];
            self.bytes = vec![0; HOLD_SLOTS * HOLD_BYTES];
            self.scratch = vec![0; ROOM + HOLD_BYTES + 64];
        }
    }

    /// Copy a frame into a free slot for connection `id`. False when full or too big.
    fn hold(&mut self, id: ConnId, cookie: u32, ingress: PortId, data: &[u8], now: u32) -> bool {
        if data.len() > HOLD_BYTES || self.held.is_empty() {
            return false;
        }
        let slot = self
            .held
            .iter()
            .position(|h| h.conn == 0 || (now.wrapping_sub(h.at) as i32) >= HOLD_MS as i32);
        let Some(i) = slot else {
            return false;
        };
        self.order = self.order.wrapping_add(1);
        self.held[i] = HeldMeta {
            conn: id.0 + 1,
            cookie,
            len: data.len() as u16,
            ingress,
            at: now,
            order: self.order,
        };
        self.bytes[i * HOLD_BYTES..i * HOLD_BYTES + data.len()].copy_from_slice(data);
        true
    }

    /// The oldest held slot of connection `id`, if any.
    fn next_held(&self, id: ConnId, cookie: u32) -> Option<usize> {
        self.held
            .iter()
            .enumerate()
            .filter(|(_, h)| h.conn == id.0 + 1 && h.cookie == cookie)
            .min_by_key(|(_, h)| h.order)
            .map(|(i, _)| i)
    }

    fn forget(&mut self, id: ConnId) {
        for h in self.held.iter_mut().filter(|h| h.conn == id.0 + 1) {
            h.conn = 0;
        }
    }
}

/// The TCP header length of a parsed segment (its data offset), if the header is whole.
fn tcp_header_len(data: &[u8], p: &Packet) -> Option<usize> {
    let off = usize::from(*data.get(p.l4 + 12)? >> 4) * 4;
    (off >= 20 && p.l4 + off <= p.ip_end).then_some(off)
}

fn rd32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Rewrite the frame's TCP segment into a bare segment (no payload) with these fields and
/// options; with `reflect`, addressed back to its sender (MACs, addresses and ports swapped,
/// TTL 64). IP length and checksums are recomputed. The new packet, or `None` when the frame
/// buffer has no room.
#[allow(clippy::too_many_arguments)]
fn build_segment(
    frame: &mut Frame,
    p: &Packet,
    reflect: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: &[u8],
) -> Option<Packet> {
    let tcp_len = 20 + opts.len();
    let (l3, l4) = (p.l3, p.l4);
    if !frame.set_len(l4 + tcp_len) {
        return None;
    }
    let v4 = p.is_v4();
    let d = frame.data_mut();
    if reflect {
        crate::wire::rewrite::swap_macs(d).ok()?;
        let (a, n) = if v4 { (l3 + 12, 4) } else { (l3 + 8, 16) };
        let (x, y) = d[a..a + 2 * n].split_at_mut(n);
        x.swap_with_slice(y);
        let (x, y) = d[l4..l4 + 4].split_at_mut(2);
        x.swap_with_slice(y);
        d[if v4 { l3 + 8 } else { l3 + 7 }] = 64;
    }
    if v4 {
        let total = (l4 - l3 + tcp_len) as u16;
        d[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        d[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&d[l3..l4]);
        d[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        let plen = (l4 - l3 - 40 + tcp_len) as u16;
        d[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
    }
    let t = &mut d[l4..l4 + tcp_len];
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((tcp_len / 4) << 4) as u8;
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    t[16..20].copy_from_slice(&[0, 0, 0, 0]);
    t[20..].copy_from_slice(opts);
    let acc = if v4 {
        let s: [u8; 4] = d[l3 + 12..l3 + 16].try_into().ok()?;
        let t: [u8; 4] = d[l3 + 16..l3 + 20].try_into().ok()?;
        checksum::pseudo_v4(s, t, proto::TCP, tcp_len as u16)
    } else {
        let s: [u8; 16] = d[l3 + 8..l3 + 24].try_into().ok()?;
        let t: [u8; 16] = d[l3 + 24..l3 + 40].try_into().ok()?;
        checksum::pseudo_v6(s, t, proto::TCP, tcp_len as u32)
    };
    let c = checksum::checksum_with(acc, &d[l4..l4 + tcp_len]);
    d[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    match parse(frame.data()) {
        Parsed::Ip(p) => Some(p),
        _ => None,
    }
}

/// Write a bare TCP segment from `src` to `dst` (Ethernet without addresses, IPv4 with DF or
/// IPv6, hop limit 64, no flags) into `buf`; returns its length, or `None` for mixed families
/// or a buffer too small. [`build_segment`] then fills in the TCP fields.
fn write_template(buf: &mut [u8], src: (IpAddr, u16), dst: (IpAddr, u16)) -> Option<usize> {
    let (l3, l4) = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = buf.get_mut(14..34)?;
            h.fill(0);
            h[0] = 0x45;
            h[2..4].copy_from_slice(&40u16.to_be_bytes());
            h[6] = 0x40;
            h[8] = 64;
            h[9] = proto::TCP;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum::checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            (0x0800u16, 34)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = buf.get_mut(14..54)?;
            h.fill(0);
            h[0] = 0x60;
            h[4..6].copy_from_slice(&20u16.to_be_bytes());
            h[6] = proto::TCP;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            (0x86dd, 54)
        }
        _ => return None,
    };
    let eth = buf.get_mut(..14)?;
    eth.fill(0);
    eth[12..14].copy_from_slice(&l3.to_be_bytes());
    let t = buf.get_mut(l4..l4 + 20)?;
    t.fill(0);
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
    t[12] = 5 << 4;
    Some(l4 + 20)
}

/// Turn a client segment of a pending connection into the director's SYN to the backend: the
/// client's ISN, the options the cookie and the client's ACK carried (MSS, SACK permitted,
/// the client's latest TSval, its window scale), its window unscaled.
fn syn_to_backend(frame: &mut Frame, p: &Packet, st: &ProxyConn) -> Option<Packet> {
    let mut out = [0u8; 20];
    let ts = (st.flags & pf::TS != 0).then_some((st.client_ts, 0));
    let ws = (st.client_ws != NO_WSCALE).then_some(st.client_ws);
    let n = write_syn_options(&mut out, st.mss, st.flags & pf::SACK != 0, ts, ws);
    let shift = if st.client_ws == NO_WSCALE {
        0
    } else {
        st.client_ws
    };
    let win = (u64::from(st.client_win) << shift).min(65_535) as u16;
    build_segment(
        frame,
        p,
        false,
        st.client_isn,
        0,
        tcp_flags::SYN,
        win,
        &out[..n],
    )
}

/// The cookie's minute counter at `now` (`tcp_cookie_time`).
fn minute(now: Time) -> u32 {
    (now.0 / 60_000_000_000) as u32
}

fn now_ms(now: Time) -> u32 {
    (now.0 / 1_000_000) as u32
}

impl Pipeline {
    /// A segment to SYN-proxied service `sid` that matched no connection.
    pub(super) fn synproxy_new(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: Packet,
        sid: ServiceId,
    ) -> Verdict {
        let f = p.tcp_flags;
        if p.frag != Frag::None {
            return Verdict::Drop(DropReason::Fragment);
        }
        let Some(hlen) = tcp_header_len(frame.data(), &p) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        self.proxy.ensure(self.conns.capacity());
        let data = frame.data();
        let opts = parse_options(&data[p.l4..p.l4 + hlen]);
        let seq = rd32(data, p.l4 + 4);
        let ack = rd32(data, p.l4 + 8);
        let win = u16::from_be_bytes([data[p.l4 + 14], data[p.l4 + 15]]);
        let tuple = CookieTuple {
            saddr: p.src,
            daddr: p.dst,
            sport: p.sport,
            dport: p.dport,
        };
        let secret = self.cfg.cookie_secret;
        if f & (tcp_flags::SYN | tcp_flags::RST | tcp_flags::ACK) == tcp_flags::SYN {
            // (1) SYN → cookie SYN-ACK, nothing stored.
            let (c, _) = cookie::make(&secret, &tuple, seq, opts.mss.unwrap_or(536), minute(now));
            let mut out = [0u8; 20];
            let mss = if p.is_v4() {
                self.cfg.synproxy_mss
            } else {
                self.cfg.synproxy_mss.saturating_sub(20)
            };
            // Without timestamps the cookie cannot carry window scale and SACK: offer neither
            // (Linux: `tcp_clear_options` for a cookie SYN without timestamps).
            let n = match opts.ts {
                Some((tsval, _)) => {
                    let our = cookie::ts_make(
                        now_ms(now),
                        TsOptions {
                            wscale: opts.wscale,
                            sack: opts.sack_perm,
                            ecn: false,
                        },
                    );
                    let ws = opts.wscale.map(|_| WSCALE);
                    write_syn_options(&mut out, mss, opts.sack_perm, Some((our, tsval)), ws)
                }
                None => write_syn_options(&mut out, mss, false, None, None),
            };
            let flags = tcp_flags::SYN | tcp_flags::ACK;
            let win = 65_535;
            if build_segment(
                frame,
                &p,
                true,
                c,
                seq.wrapping_add(1),
                flags,
                win,
                &out[..n],
            )
            .is_none()
            {
                return Verdict::Drop(DropReason::NoHeadroom);
            }
            self.counters.synproxy_syn_acks += 1;
            return Verdict::Tx(ingress);
        }
        if f & (tcp_flags::SYN | tcp_flags::RST | tcp_flags::ACK) != tcp_flags::ACK {
            return Verdict::Drop(DropReason::SynproxyBadCookie);
        }
        // (2) ACK: check the cookie.
        let client_isn = seq.wrapping_sub(1);
        let our_isn = ack.wrapping_sub(1);
        let Some(mss) = cookie::check(&secret, &tuple, our_isn, client_isn, minute(now)) else {
            return Verdict::Drop(DropReason::SynproxyBadCookie);
        };
        let tso = opts.ts.map(|(_, ecr)| cookie::ts_decode(ecr));
        if self.cfg.defense.embryonic_share > 0 && !self.make_room(now, 1) {
            return Verdict::Drop(DropReason::EmbryonicLimit);
        }
        let new = match self.schedule_conn(now, ingress, frame, &p, sid) {
            Ok(n) => n,
            Err(v) => return v,
        };
        if !new.method.replies_through_director() {
            // DR / TUN replies bypass the director, which could not translate them (the
            // configuration refuses such services; a backend changed under it lands here).
            self.release_template(new.control, now);
            return Verdict::Drop(DropReason::Unsupported);
        }
        let Some(id) = self.conns.insert(&new, now) else {
            self.release_template(new.control, now);
            return Verdict::Drop(DropReason::TableFull);
        };
        self.service_traffic[sid.0 as usize].conns += 1;
        self.backend_traffic[new.backend.0 as usize].conns += 1;
        self.conns.set_synproxy(id);
        let client_ws = tso.and_then(|o| o.wscale).unwrap_or(NO_WSCALE);
        let mut st = ProxyConn {
            client_isn,
            cookie: our_isn,
            client_win: win,
            client_ws,
            backend_ws: NO_WSCALE,
            our_ws: if client_ws == NO_WSCALE {
                NO_WSCALE
            } else {
                WSCALE
            },
            ..ProxyConn::default()
        };
        if let Some((tsval, tsecr)) = opts.ts {
            st.flags |= pf::TS;
            st.our_ts = tsecr;
            st.client_ts = tsval;
        }
        if tso.is_some_and(|o| o.sack) {
            st.flags |= pf::SACK;
        }
        // Data (or a FIN) in the third segment is held for the backend.
        let payload = p.ip_end > p.l4 + hlen;
        if payload || f & tcp_flags::FIN != 0 {
            let end = p.ip_end;
            if self
                .proxy
                .hold(id, our_isn, ingress, &frame.data()[..end], now_ms(now))
            {
                st.held = 1;
            }
        }
        st.mss = mss;
        st.syn_at = now_ms(now);
        self.proxy.conns[id.0 as usize] = st;
        let Some(p2) = syn_to_backend(frame, &p, &st) else {
            self.conns.expire_now(id, now);
            return Verdict::Drop(DropReason::NoHeadroom);
        };
        self.conns.set_state(id, tcp::SYN_SENT, now);
        self.counters.synproxy_opened += 1;
        let armed = self.proxy.arm(Retry {
            slot: id.0,
            cookie: our_isn,
            due: st
                .syn_at
                .wrapping_add(self.cfg.defense.synproxy_syn_interval_ms.max(1)),
            tries: 0,
            ingress,
        });
        if !armed {
            self.counters.synproxy_timer_full += 1;
        }
        self.synproxy_send(now, ingress, frame, p2, id, Direction::In, true)
    }

    /// Forward a segment of connection `id` without a state transition (the SYN proxy sets
    /// the state itself).
    #[allow(clippy::too_many_arguments)]
    fn synproxy_send(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: Packet,
        id: ConnId,
        dir: Direction,
        new_conn: bool,
    ) -> Verdict {
        let c = match self.conns.get_v4(id) {
            Some(c) => Target::from(c),
            None => match self.conns.get(id) {
                Some(c) => Target::from(&c),
                None => return Verdict::Drop(DropReason::NoConnection),
            },
        };
        self.rewrite(now, ingress, frame, p, &c, dir, new_conn)
    }

    /// A segment of SYN-proxied connection `id`.
    pub(super) fn synproxy_conn(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: Packet,
        id: ConnId,
        dir: Direction,
    ) -> Verdict {
        let Some(hlen) = tcp_header_len(frame.data(), &p) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        let Some(&st) = self.proxy.conns.get(id.0 as usize) else {
            return Verdict::Drop(DropReason::NoConnection);
        };
        let f = p.tcp_flags;
        if st.flags & pf::FAILED != 0 {
            return Verdict::Drop(DropReason::SynproxyGaveUp);
        }
        if st.flags & pf::OPEN != 0 {
            // Translate, then forward as any segment.
            let opts = parse_options(&frame.data()[p.l4..p.l4 + hlen]);
            let t = match dir {
                Direction::Out => st.outbound(),
                Direction::In => st.inbound(),
            };
            let end = p.ip_end;
            translate(&mut frame.data_mut()[p.l4..end], &opts, &t);
            return self.forward(now, ingress, frame, p, id, dir, false);
        }
        match dir {
            Direction::Out => {
                let data = frame.data();
                let seq = rd32(data, p.l4 + 4);
                let ack = rd32(data, p.l4 + 8);
                if f & tcp_flags::RST != 0 {
                    // The backend refused: the client gets a RST in its sequence space.
                    let mut d = frame.data_mut();
                    let old = rd32(d, p.l4 + 4);
                    let new = st.cookie.wrapping_add(1);
                    d = &mut d[p.l4..];
                    d[4..8].copy_from_slice(&new.to_be_bytes());
                    let c = u16::from_be_bytes([d[16], d[17]]);
                    let c = checksum::update32(c, old.to_be_bytes(), new.to_be_bytes());
                    d[16..18].copy_from_slice(&c.to_be_bytes());
                    self.proxy.forget(id);
                    let v = self.forward(now, ingress, frame, p, id, dir, false);
                    self.conns.set_state(id, tcp::CLOSE, now);
                    return v;
                }
                let synack = tcp_flags::SYN | tcp_flags::ACK;
                if f & (synack | tcp_flags::RST) != synack || ack != st.client_isn.wrapping_add(1) {
                    return Verdict::Drop(DropReason::SynproxyPending);
                }
                // (3) The backend's SYN-ACK: complete its handshake.
                let opts = parse_options(&data[p.l4..p.l4 + hlen]);
                let mut st = st;
                st.delta = st.cookie.wrapping_sub(seq);
                st.backend_ws = opts.wscale.unwrap_or(NO_WSCALE);
                if st.client_ws == NO_WSCALE {
                    // Window scaling needs both ends; the backend saw no offer.
                    st.backend_ws = NO_WSCALE;
                }
                let backend_ts = opts.ts;
                if let (true, Some((bval, _))) = (st.flags & pf::TS != 0, backend_ts) {
                    st.flags |= pf::BACKEND_TS;
                    st.ts_delta = st.our_ts.wrapping_sub(bval);
                }
                st.flags |= pf::OPEN;
                self.proxy.conns[id.0 as usize] = st;
                let mut out = [0u8; 20];
                let n = match backend_ts {
                    Some((bval, _)) if st.flags & pf::TS != 0 => {
                        write_ts_option(&mut out, st.client_ts, bval)
                    }
                    _ => 0,
                };
                let win = if st.backend_ws == NO_WSCALE && st.client_ws != NO_WSCALE {
                    (u64::from(st.client_win) << st.client_ws).min(65_535) as u16
                } else {
                    st.client_win
                };
                if build_segment(
                    frame,
                    &p,
                    true,
                    st.client_isn.wrapping_add(1),
                    seq.wrapping_add(1),
                    tcp_flags::ACK,
                    win,
                    &out[..n],
                )
                .is_none()
                {
                    return Verdict::Drop(DropReason::NoHeadroom);
                }
                self.conns.set_state(id, tcp::ESTABLISHED, now);
                self.counters.synproxy_established += 1;
                if st.held > 0 {
                    self.synproxy_release(now, id, st.cookie);
                }
                Verdict::Tx(ingress)
            }
            Direction::In => {
                if f & tcp_flags::RST != 0 {
                    // Give up; the backend's half-open connection times out on its own.
                    self.proxy.forget(id);
                    self.conns.expire_now(id, now);
                    return Verdict::Drop(DropReason::SynproxyPending);
                }
                let payload = p.ip_end > p.l4 + hlen;
                let mut verdict = DropReason::SynproxyPending;
                if (payload || f & tcp_flags::FIN != 0) && st.held < HOLD_PER_CONN {
                    let end = p.ip_end;
                    if self
                        .proxy
                        .hold(id, st.cookie, ingress, &frame.data()[..end], now_ms(now))
                    {
                        self.proxy.conns[id.0 as usize].held += 1;
                        verdict = DropReason::SynproxyHeld;
                    }
                }
                // The client is retransmitting and the backend has not answered: the SYN may
                // have been lost, send it again in this frame's place (at most every
                // `SYN_RESEND_MS`).
                let ms = now_ms(now);
                if (ms.wrapping_sub(st.syn_at) as i32) >= SYN_RESEND_MS as i32 {
                    if let Some(p2) = syn_to_backend(frame, &p, &st) {
                        self.proxy.conns[id.0 as usize].syn_at = ms;
                        self.counters.synproxy_syn_resent += 1;
                        return self.synproxy_send(now, ingress, frame, p2, id, dir, false);
                    }
                }
                Verdict::Drop(verdict)
            }
        }
    }

    /// Send connection `id`'s held segments on (translated, rewritten, queued with the extra
    /// frames).
    fn synproxy_release(&mut self, now: Time, id: ConnId, cookie_isn: u32) {
        let mut scratch = std::mem::take(&mut self.proxy.scratch);
        for _ in 0..HOLD_PER_CONN {
            let Some(i) = self.proxy.next_held(id, cookie_isn) else {
                break;
            };
            let h = self.proxy.held[i];
            self.proxy.held[i].conn = 0;
            let len = usize::from(h.len);
            if scratch.len() < ROOM + len {
                continue;
            }
            scratch[ROOM..ROOM + len]
                .copy_from_slice(&self.proxy.bytes[i * HOLD_BYTES..i * HOLD_BYTES + len]);
            let mut f = Frame::new(&mut scratch, ROOM, len);
            let Parsed::Ip(p) = parse(f.data()) else {
                continue;
            };
            let v = self.synproxy_conn(now, h.ingress, &mut f, p, id, Direction::In);
            if let Verdict::Tx(port) = v {
                if self.frag_frames.len() < super::MAX_PENDING_FRAGMENTS {
                    let start = self.frag_bytes.len();
                    self.frag_bytes.extend_from_slice(f.data());
                    self.frag_frames.push((port, start..self.frag_bytes.len()));
                    self.counters.synproxy_released += 1;
                }
            }
        }
        self.proxy.scratch = scratch;
        if let Some(st) = self.proxy.conns.get_mut(id.0 as usize) {
            st.held = 0;
        }
    }

    /// The retry timers that are due (at most [`TIMER_BUDGET`] per call): the SYN to the
    /// backend again, or after the last retry a RST to the client.
    pub(super) fn synproxy_timers(&mut self, now: Time) {
        let ms = now_ms(now);
        let interval = self.cfg.defense.synproxy_syn_interval_ms.max(1);
        for _ in 0..TIMER_BUDGET {
            let Some(&r) = self.proxy.retries.front() else {
                break;
            };
            if (ms.wrapping_sub(r.due) as i32) < 0 {
                break;
            }
            self.proxy.retries.pop_front();
            let id = ConnId(r.slot);
            if !self.conns.is_synproxy(id) || !self.proxy.waiting(&r) {
                continue;
            }
            let st = self.proxy.conns[r.slot as usize];
            if r.tries >= self.cfg.defense.synproxy_syn_retries {
                self.synproxy_emit(now, id, &st, r.ingress, true);
                self.proxy.forget(id);
                let s = &mut self.proxy.conns[r.slot as usize];
                s.flags |= pf::FAILED;
                s.held = 0;
                self.conns.set_state(id, tcp::CLOSE, now);
                self.counters.synproxy_gave_up += 1;
                continue;
            }
            if self.synproxy_emit(now, id, &st, r.ingress, false) {
                self.counters.synproxy_syn_retried += 1;
            }
            self.proxy.conns[r.slot as usize].syn_at = ms;
            // Due one interval from now: still behind every queued timer.
            self.proxy.retries.push_back(Retry {
                due: ms.wrapping_add(interval),
                tries: r.tries + 1,
                ..r
            });
        }
    }

    /// Build, rewrite and queue (with the extra frames) a segment of pending connection `id`
    /// from its entry: the director's SYN toward the backend, or (`rst`) a RST toward the
    /// client in its sequence space. True when queued.
    fn synproxy_emit(
        &mut self,
        now: Time,
        id: ConnId,
        st: &ProxyConn,
        ingress: PortId,
        rst: bool,
    ) -> bool {
        let Some(c) = self.conns.get(id) else {
            return false;
        };
        if self.frag_frames.len() >= super::MAX_PENDING_FRAGMENTS {
            return false;
        }
        let mut scratch = std::mem::take(&mut self.proxy.scratch);
        let (src, dst, dir) = if rst {
            ((c.vaddr, c.vport), (c.client, c.cport), Direction::Out)
        } else {
            ((c.client, c.cport), (c.vaddr, c.vport), Direction::In)
        };
        let mut sent = false;
        if let Some(len) = scratch
            .get_mut(ROOM..)
            .and_then(|b| write_template(b, src, dst))
        {
            let mut f = Frame::new(&mut scratch, ROOM, len);
            let p2 = match parse(f.data()) {
                Parsed::Ip(p) if rst => build_segment(
                    &mut f,
                    &p,
                    false,
                    st.cookie.wrapping_add(1),
                    st.client_isn.wrapping_add(1),
                    tcp_flags::RST | tcp_flags::ACK,
                    0,
                    &[],
                ),
                Parsed::Ip(p) => syn_to_backend(&mut f, &p, st),
                _ => None,
            };
            if let Some(p2) = p2 {
                if let Verdict::Tx(port) =
                    self.synproxy_send(now, ingress, &mut f, p2, id, dir, false)
                {
                    let start = self.frag_bytes.len();
                    self.frag_bytes.extend_from_slice(f.data());
                    self.frag_frames.push((port, start..self.frag_bytes.len()));
                    sent = true;
                }
            }
        }
        self.proxy.scratch = scratch;
        sent
    }

    /// Undo the translation of the TCP segment quoted in an ICMP error about SYN-proxied
    /// connection `id` (`e`: the quote; `dir`: the error's direction), so that the receiver
    /// finds its own sequence numbers in it (a stack ignores an error whose quoted sequence
    /// number it never sent, e.g. Linux's `tcp_v4_err`). Only once the backend answered:
    /// before, nothing was translated. The quoted TCP checksum is updated incrementally when
    /// quoted; the ICMP checksum is left to the caller.
    pub(super) fn synproxy_quote(
        &mut self,
        frame: &mut Frame,
        e: &crate::wire::icmp::Embedded,
        id: ConnId,
        dir: Direction,
    ) {
        let Some(st) = self.proxy.conns.get(id.0 as usize) else {
            return;
        };
        if st.flags & pf::OPEN == 0 || st.flags & pf::FAILED != 0 || e.l4 > e.end {
            return;
        }
        let t = match dir {
            // From the backend's side, about a segment sent to the backend.
            Direction::Out => st.inbound_undone(),
            Direction::In => st.outbound_undone(),
        };
        let Some(tcp) = frame.data_mut().get_mut(e.l4..e.end) else {
            return;
        };
        let opts = parse_options(tcp);
        translate(tcp, &opts, &t);
    }

    /// The SYN proxy's state of connection `id` (tests and diagnostics).
    pub fn synproxy_state(&self, id: ConnId) -> Option<ProxyConn> {
        if !self.conns.is_synproxy(id) {
            return None;
        }
        self.proxy.conns.get(id.0 as usize).copied()
    }
}
