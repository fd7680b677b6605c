//! The established-flow path: the common frame on plain integers, with the full pipeline as
//! its fallback.
//!
//! Most frames a director sees belong to a connection it already holds and change nothing but
//! that connection's timer: an ACK of an ESTABLISHED TCP connection, a UDP datagram. Katran
//! (`balancer_kern.c`: parse, one LRU lookup, rewrite) and DPVS (`dp_vs_in`: `conn_get` then
//! the method's `xmit` with precomputed checksum deltas) serve those with a short straight
//! path; this module is xvs's, and like theirs it handles only what it can prove it handles
//! exactly as the full pipeline does:
//!
//! 1. parse: [`parse_v4`](crate::wire::parse::parse_v4) — untagged Ethernet, IPv4 without options, an unfragmented TCP or
//!    UDP segment, every check of the general parser passing — into `u32` addresses and
//!    ports (the same reader [`parse`](crate::wire::parse) starts with);
//! 2. the L2 hygiene of an untagged frame (`hygiene::l2`: unicast, addressed to the port);
//! 3. one lookup ([`ConnTable::lookup_v4`]); a miss is a new connection, taken by the full
//!    path's `new_connection` with the same [`Packet`];
//! 4. [`ConnTable::touch_v4`]: the state refresh of a packet that leaves the state where it is
//!    (ESTABLISHED TCP + ACK without SYN/FIN/RST, or UDP), refused for SYN-proxied entries,
//!    for a backend that was removed and while this worker is a sync master (the full path
//!    sends sync messages for inbound packets);
//! 5. the rewrite ([`wire::rewrite::forward_v4`](crate::wire::rewrite::forward_v4): TTL − 1,
//!    the method's address and port changes, each checksum updated once) and the new MAC
//!    addresses, when the next hop is known, untagged and the packet fits its MTU.
//!
//! Everything else — VLAN tags, IPv6, IP options, fragments, ICMP, SCTP, other L2
//! destinations, state changes, SYN proxy, sync, removed backends, TUN encapsulation, TTL
//! expiry, MTU trouble, a UDP checksum of 0, an unknown neighbour — leaves this path at the
//! first step that cannot decide it, before anything was changed, and continues in the full
//! pipeline at the same point (the parse, the hit, or the rewrite). `fast_path_equivalence`
//! in `tests/pipeline_fastpath.rs` checks that both give byte-identical frames, the same
//! verdicts, counters and connection state on random frames and flows.

use std::net::{IpAddr, Ipv4Addr};

use crate::conn::{ConnId, ConnV4, Direction, Method, TouchV4};
use crate::wire::parse::FastV4;
use crate::wire::rewrite::{forward_v4, V4Endpoints};
use crate::wire::{parse, Frag, Packet, Parsed};
use crate::{DropReason, Frame, PortId, Time, Verdict};

use super::{Decision, Pipeline, ServiceId, Target};

/// Whether a parsed packet is one [`parse_v4`](crate::wire::parse::parse_v4) accepts (untagged, IPv4 without options,
/// unfragmented TCP / UDP): then [`Pipeline::rewrite_v4`] may read its headers from the frame.
#[inline]
fn is_fast(p: &Packet) -> bool {
    p.l3 == FastV4::L3
        && p.l4 == FastV4::L4
        && p.vlan.is_none()
        && p.frag == Frag::None
        && p.is_v4()
        && matches!(p.proto, crate::wire::proto::TCP | crate::wire::proto::UDP)
}

/// The frame's packet again, for the full path: [`parse`] of an unchanged frame gives what it
/// gave before (`None` cannot happen: the caller's frame parsed as IP).
#[inline]
fn reparse(frame: &Frame) -> Option<Packet> {
    match parse(frame.data()) {
        Parsed::Ip(p) => Some(p),
        _ => None,
    }
}

impl Pipeline {
    /// [`Self::process`] for a frame [`parse_v4`](crate::wire::parse::parse_v4) accepted.
    #[inline(always)]
    pub(super) fn process_v4(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        f: FastV4,
    ) -> Verdict {
        self.last = None;
        self.answered = None;
        self.counters.rx += 1;
        let v = self.verdict_v4(now, ingress, frame, f);
        self.account(v)
    }

    #[inline(always)]
    fn verdict_v4(&mut self, now: Time, ingress: PortId, frame: &mut Frame, f: FastV4) -> Verdict {
        // `hygiene::l2` of an untagged frame: unicast and, when the port's MAC is known, its.
        let to_us = frame.data().get(..6).is_some_and(|dst| {
            dst[0] & 1 == 0
                && self
                    .net
                    .port(ingress)
                    .is_none_or(|p| p.mac == [0; 6] || *dst == p.mac)
        });
        if !to_us {
            return self.verdict_full(now, ingress, frame);
        }
        // No options, not IPv6, not ICMP, not a fragment, TCP or UDP: the full path's checks
        // before the lookup all pass. What `hit` and `forward` would do differently for a
        // steady packet: an inbound packet of a removed backend's connection, sync messages
        // for inbound packets.
        let snap = &self.snap;
        let plain_in = self.sync_master.is_none();
        let found = self.conns.lookup_touch_v4(
            f.proto,
            f.src,
            f.sport,
            f.dst,
            f.dport,
            f.tcp_flags,
            now,
            |dir, c| {
                dir == Direction::Out
                    || (plain_in
                        && !snap
                            .backends
                            .get(c.backend.0 as usize)
                            .is_some_and(|b| b.removed))
            },
        );
        match found {
            TouchV4::Steady(_, dir, c) => self.rewrite_v4(now, ingress, frame, &c, dir, false),
            TouchV4::Hit(id, dir) => self.hit_full(now, ingress, frame, id, dir),
            TouchV4::Miss => self.new_connection_v4(now, ingress, frame),
        }
    }

    /// `rewrite` of an IPv4 packet `p` of a connection (the full path's `forward` after the
    /// state refresh): [`Self::rewrite_v4`] when `p` is a [`parse_v4`](crate::wire::parse::parse_v4) packet, else the full
    /// `rewrite`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn rewrite_packet_v4(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        p: Packet,
        c: &ConnV4,
        dir: Direction,
        new_conn: bool,
    ) -> Verdict {
        if is_fast(&p) {
            self.rewrite_v4(now, ingress, frame, c, dir, new_conn)
        } else {
            self.rewrite(now, ingress, frame, p, &Target::from(*c), dir, new_conn)
        }
    }

    /// `rewrite_frame` for an unfragmented IPv4 TCP / UDP packet (as [`parse_v4`](crate::wire::parse::parse_v4) accepts it,
    /// its fields read from the frame) of an IPv4 connection: the same bytes, counters and
    /// decision when the next hop is known and untagged, the method keeps the packet's size
    /// (not TUN inbound), the TTL is above 1, the packet fits the MTU and (UDP) carries a
    /// checksum; otherwise `rewrite_frame` itself.
    #[inline(always)]
    fn rewrite_v4(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        c: &ConnV4,
        dir: Direction,
        new_conn: bool,
    ) -> Verdict {
        let [client, vaddr, daddr, laddr] = c.addrs;
        let [cport, vport, dport, lport] = c.ports;
        let (next, src, dst) = match (c.method, dir) {
            (Method::Nat, Direction::In) => (daddr, None, Some((daddr, dport))),
            (Method::Nat, Direction::Out) => (client, Some((vaddr, vport)), None),
            (Method::FullNat, Direction::In) => (daddr, Some((laddr, lport)), Some((daddr, dport))),
            (Method::FullNat, Direction::Out) => {
                (client, Some((vaddr, vport)), Some((client, cport)))
            }
            (Method::Dr, Direction::In) => (daddr, None, None),
            (Method::Dr | Method::Tunnel, Direction::Out) => (client, None, None),
            (Method::Tunnel, Direction::In) => {
                return self.rewrite_full(now, ingress, frame, c, dir, new_conn);
            }
        };
        let hop = match self.next_hop(c.backend, dir, IpAddr::V4(Ipv4Addr::from_bits(next))) {
            Some(h) if h.vlan.is_none() => h,
            _ => return self.rewrite_full(now, ingress, frame, c, dir, new_conn),
        };
        // The packet's fields, read again from its headers (what `parse_v4` read).
        let d = frame.data_mut();
        let Some(h) = d.get(..FastV4::L4 + 4) else {
            return self.rewrite_full(now, ingress, frame, c, dir, new_conn);
        };
        const L3: usize = FastV4::L3;
        const L4: usize = FastV4::L4;
        let be16 = |o: usize| u16::from_be_bytes([h[o], h[o + 1]]);
        let be32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let bytes = usize::from(be16(L3 + 2));
        let (proto, ttl) = (h[L3 + 9], h[L3 + 8]);
        let old = V4Endpoints {
            src: be32(L3 + 12),
            sport: be16(L4),
            dst: be32(L3 + 16),
            dport: be16(L4 + 2),
        };
        let ip_end = L3 + bytes;
        if bytes > usize::from(hop.mtu) || !forward_v4(d, L3, L4, ip_end, proto, ttl, old, src, dst)
        {
            // Nothing changed (too big, TTL ≤ 1, UDP without a checksum).
            return self.rewrite_full(now, ingress, frame, c, dir, new_conn);
        }
        self.last = Some(Decision {
            service: ServiceId(c.service),
            backend: c.backend,
            method: c.method,
            direction: dir,
            new_conn,
        });
        if let Some(t) = self.service_traffic.get_mut(c.service as usize) {
            t.count(dir, bytes);
        }
        if let Some(t) = self.backend_traffic.get_mut(c.backend.0 as usize) {
            t.count(dir, bytes);
        }
        // Ethernet padding and trailers stay behind (only shrinks: cannot fail).
        if frame.len() > ip_end && !frame.set_len(ip_end) {
            return Verdict::Drop(DropReason::Truncated);
        }
        // The link header in place (`rewrite::set_link` for an untagged hop): the MACs.
        if let Some(h) = frame.data_mut().get_mut(..12) {
            h[..6].copy_from_slice(&hop.dst_mac);
            h[6..].copy_from_slice(&hop.src_mac);
        }
        Verdict::Tx(hop.port)
    }

    /// The full path from the start (`verdict`), for a frame the L2 checks do not accept.
    #[cold]
    #[inline(never)]
    fn verdict_full(&mut self, now: Time, ingress: PortId, frame: &mut Frame) -> Verdict {
        let parsed = parse(frame.data());
        self.verdict(now, ingress, frame, parsed)
    }

    /// The full path after the lookup (`hit`), for a connection whose packet is not steady.
    #[cold]
    #[inline(never)]
    fn hit_full(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        id: ConnId,
        dir: Direction,
    ) -> Verdict {
        match reparse(frame) {
            Some(p) => self.hit(now, ingress, frame, p, id, dir),
            None => Verdict::Drop(DropReason::Malformed),
        }
    }

    /// A packet without a connection: the full path's `new_connection`.
    #[inline(never)]
    fn new_connection_v4(&mut self, now: Time, ingress: PortId, frame: &mut Frame) -> Verdict {
        match reparse(frame) {
            Some(p) => self.new_connection(now, ingress, frame, p),
            None => Verdict::Drop(DropReason::Malformed),
        }
    }

    /// The full path's `rewrite_frame` for a packet [`Self::rewrite_v4`] does not take (the
    /// frame unchanged).
    #[cold]
    #[inline(never)]
    fn rewrite_full(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        c: &ConnV4,
        dir: Direction,
        new_conn: bool,
    ) -> Verdict {
        match reparse(frame) {
            Some(mut p) => self.rewrite_frame(
                now,
                ingress,
                frame,
                &mut p,
                &Target::from(*c),
                dir,
                new_conn,
            ),
            None => Verdict::Drop(DropReason::Malformed),
        }
    }
}
