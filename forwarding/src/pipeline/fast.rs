//! The established-flow path: the common frame on plain integers, with the full pipeline as
//! its fallback.
//!
//! Most frames a director sees belong to a connection it already holds and change nothing but
//! that connection's timer: an ACK of an ESTABLISHED TCP connection, a UDP datagram. Katran
//! (`balancer_kern.c`: parse, one LRU lookup, rewrite) and DPVS (`dp_vs_in`: `conn_get` then
//! the method's `xmit` with incremental checksum updates) serve those with a short straight
//! path; this module is xvs's, and like theirs it handles only what it can prove it handles
//! exactly as the full pipeline does:
//!
//! 1. parse: [`parse_v4`] — untagged Ethernet, IPv4 without options, an unfragmented TCP or
//!    UDP segment, every check of the general parser passing — into `u32` addresses and ports
//!    (the same reader [`parse`](crate::wire::parse()) starts with);
//! 2. the L2 hygiene of an untagged frame (`hygiene::l2`: unicast, addressed to the port);
//! 3. one hash and lookup that also refreshes a steady entry
//!    ([`ConnTable::lookup_touch_v4`](crate::conn::ConnTable::lookup_touch_v4)): a packet that
//!    leaves the state where it is (ESTABLISHED TCP + ACK without SYN/FIN/RST, or UDP) gets
//!    `on_packet`'s timer refresh and nothing else; refused for SYN-proxied and IPv6 entries,
//!    a timer that would move earlier, a backend that was removed, and inbound packets while
//!    this worker is a sync master (the full path sends sync messages for those);
//! 4. the rewrite with the next hop from the per-backend cache (toward a backend) or the
//!    gateway route (toward a client): NAT / FullNAT / DR with
//!    [`forward_v4`] (TTL − 1, the method's address and port changes, each checksum updated
//!    once), TUN with [`rewrite::encap_ipip_v4`]; the new MAC addresses, the traffic
//!    counters and the decision.
//!
//! Everything else — VLAN tags, IPv6, IP options, fragments, ICMP, SCTP, other L2
//! destinations, state changes, SYN proxy, sync, removed backends, TTL expiry, MTU trouble,
//! a UDP checksum of 0, an uncached or tagged next hop — leaves this path, before anything was
//! changed, at the first step that cannot decide it and continues in the full pipeline at the
//! same point ([`Slow`]: the start, the lookup, a new connection, or `rewrite_frame` after the
//! refresh). The path makes no calls but the out-of-line ones, so the compiler keeps its values
//! in registers. `fast_path_equivalence` in `tests/pipeline_fastpath.rs` checks that it and the
//! full pipeline ([`Pipeline::set_fast_path`] off) give the same frames, verdicts, decisions,
//! counters, sync messages and connection state on random frames and flows.

use std::net::{IpAddr, Ipv4Addr};

use crate::conn::{ConnV4, Direction, Method, TouchV4};
use crate::net::Hop;
use crate::wire::parse::{parse_v4, FastV4};
use crate::wire::rewrite::{self, forward_v4, V4Endpoints};
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

/// Where the established-flow path hands a frame to the full pipeline (the frame unchanged).
enum Slow {
    /// From the start (`verdict`).
    Start,
    /// After the parse and the L2 checks: the lookup and what follows.
    Lookup,
    /// No connection: `new_connection`.
    Miss,
    /// The connection was refreshed: `rewrite_frame`.
    Rewrite(ConnV4, Direction),
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
        let v = match self.fast_v4(now, ingress, frame, f) {
            Ok(v) => v,
            Err(slow) => self.slow_v4(now, ingress, frame, slow),
        };
        self.account(v)
    }

    /// The established-flow path: a verdict, or where the full pipeline takes over. No calls
    /// but the route lookup of a reply, so the compiler keeps its values in registers.
    #[inline(always)]
    fn fast_v4(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        f: FastV4,
    ) -> Result<Verdict, Slow> {
        // `hygiene::l2` of an untagged frame: unicast and, when the port's MAC is known, its.
        let to_us = frame.data().get(..6).is_some_and(|dst| {
            let dst = crate::net::mac_word(&[dst[0], dst[1], dst[2], dst[3], dst[4], dst[5]]);
            dst & 1 == 0
                && self
                    .net
                    .port_mac_word(ingress)
                    .is_none_or(|mac| mac == 0 || dst == mac)
        });
        if !to_us {
            return Err(Slow::Start);
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
            |dir, backend| {
                dir == Direction::Out
                    || (plain_in
                        && !snap
                            .backends
                            .get(backend.0 as usize)
                            .is_some_and(|b| b.removed))
            },
        );
        match found {
            TouchV4::Steady(id, dir) => match self.conns.get_v4(id) {
                Some(c) => self.rewrite_v4(frame, &c, dir, false),
                None => Ok(Verdict::Drop(DropReason::NoConnection)),
            },
            TouchV4::Other => Err(Slow::Lookup),
            TouchV4::Miss => Err(Slow::Miss),
        }
    }

    /// `next_hop` toward an IPv4 client on a link of the director (a neighbour lookup).
    #[cold]
    #[inline(never)]
    fn on_link_hop(&self, client: u32) -> Option<Hop> {
        self.net.next_hop(IpAddr::V4(Ipv4Addr::from_bits(client)))
    }

    /// The full pipeline from where the established-flow path left the frame.
    #[inline(never)]
    fn slow_v4(&mut self, now: Time, ingress: PortId, frame: &mut Frame, slow: Slow) -> Verdict {
        // The frame is unchanged: reading it again gives the packet `parse_v4` accepted (and
        // `parse` would give).
        let Some(p) = parse_v4(frame.data()).map(|f| f.packet()) else {
            let parsed = parse(frame.data());
            return self.verdict(now, ingress, frame, parsed);
        };
        match slow {
            Slow::Start => self.verdict(now, ingress, frame, Parsed::Ip(p)),
            Slow::Lookup => {
                let (s, d) = match (p.src, p.dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => (s.to_bits(), d.to_bits()),
                    _ => return self.verdict(now, ingress, frame, Parsed::Ip(p)),
                };
                match self.conns.lookup_v4(p.proto, s, p.sport, d, p.dport, now) {
                    Some((id, dir)) => self.hit(now, ingress, frame, p, id, dir),
                    None => self.new_connection(now, ingress, frame, p),
                }
            }
            Slow::Miss => self.new_connection(now, ingress, frame, p),
            Slow::Rewrite(c, dir) => {
                let mut p = p;
                self.rewrite_frame(now, ingress, frame, &mut p, &Target::from(c), dir, false)
            }
        }
    }

    /// `rewrite` of an IPv4 packet `p` of a connection (the full path's `forward` after the
    /// state refresh): [`Self::rewrite_v4`] when `p` is a
    /// [`parse_v4`](crate::wire::parse::parse_v4) packet, else (or when it declines) the full
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
        if self.fast_path && is_fast(&p) {
            if let Ok(v) = self.rewrite_v4(frame, c, dir, new_conn) {
                return v;
            }
        }
        self.rewrite(now, ingress, frame, p, &Target::from(*c), dir, new_conn)
    }

    /// `rewrite_frame` for an unfragmented IPv4 TCP / UDP packet (as
    /// [`parse_v4`](crate::wire::parse::parse_v4) accepts it, its fields read from the frame)
    /// of an IPv4 connection, when the next hop is cached (inbound) or found (outbound) and
    /// untagged, the method keeps the packet's size (not TUN inbound), the TTL is above 1, the
    /// packet fits the MTU and (UDP) carries a checksum: the same bytes, counters, decision
    /// and verdict. `Err` with nothing changed otherwise: `rewrite_frame`'s to do.
    #[inline(always)]
    fn rewrite_v4(
        &mut self,
        frame: &mut Frame,
        c: &ConnV4,
        dir: Direction,
        new_conn: bool,
    ) -> Result<Verdict, Slow> {
        let slow = || Slow::Rewrite(*c, dir);
        let [client, vaddr, daddr, laddr] = c.addrs;
        let [cport, vport, dport, lport] = c.ports;
        let (src, dst) = match (c.method, dir) {
            (Method::Nat, Direction::In) => (None, Some((daddr, dport))),
            (Method::Nat, Direction::Out) => (Some((vaddr, vport)), None),
            (Method::FullNat, Direction::In) => (Some((laddr, lport)), Some((daddr, dport))),
            (Method::FullNat, Direction::Out) => (Some((vaddr, vport)), Some((client, cport))),
            (Method::Dr, Direction::In) => (None, None),
            (Method::Dr | Method::Tunnel, Direction::Out) => (None, None),
            (Method::Tunnel, Direction::In) => return self.tunnel_v4(frame, c, new_conn),
        };
        // `next_hop`: toward the backend from its cache, toward the client through a
        // gateway route (a cache miss or an on-link client is resolved by the full path).
        let hop = match dir {
            Direction::In => match self.hops.get(c.backend.0 as usize) {
                Some(h)
                    if h.generation == self.net.generation()
                        && h.addr == IpAddr::V4(Ipv4Addr::from_bits(daddr)) =>
                {
                    h.hop
                }
                _ => return Err(slow()),
            },
            Direction::Out => match self.net.gateway_hop_v4(client) {
                Some(h) => h,
                None => self.on_link_hop(client),
            },
        };
        let hop = match hop {
            Some(h) if h.vlan.is_none() => h,
            _ => return Err(slow()),
        };
        // The packet's fields, read again from its headers (what `parse_v4` read).
        const L3: usize = FastV4::L3;
        const L4: usize = FastV4::L4;
        let d = frame.data_mut();
        let Some(h) = d.get(..L4 + 4) else {
            return Err(slow());
        };
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
            return Err(slow());
        }
        // The link header in place (`rewrite::set_link` for an untagged hop): the MACs.
        d[..6].copy_from_slice(&hop.dst_mac);
        d[6..12].copy_from_slice(&hop.src_mac);
        self.record(
            Decision {
                service: ServiceId(c.service),
                backend: c.backend,
                method: c.method,
                direction: dir,
                new_conn,
            },
            bytes,
        );
        // Ethernet padding and trailers stay behind (only shrinks: cannot fail).
        if frame.len() > ip_end && !frame.set_len(ip_end) {
            return Ok(Verdict::Drop(DropReason::Truncated));
        }
        Ok(Verdict::Tx(hop.port))
    }

    /// `rewrite_frame` + `tunnel` for an IPv4 packet to an IPv4 TUN backend whose next hop is
    /// cached and untagged: IPIP encapsulation with the egress port's address as the outer
    /// source and the inner TTL − 1 ([`rewrite::encap_ipip_v4`]), the same bytes, counters,
    /// decision, verdict and IPv4 identification. `Err` with nothing changed when the full
    /// path has to decide (TTL ≤ 1, too big, no headroom, no IPv4 address on the port, an
    /// uncached hop).
    #[inline(always)]
    fn tunnel_v4(
        &mut self,
        frame: &mut Frame,
        c: &ConnV4,
        new_conn: bool,
    ) -> Result<Verdict, Slow> {
        let slow = || Slow::Rewrite(*c, Direction::In);
        let daddr = IpAddr::V4(Ipv4Addr::from_bits(c.addrs[2]));
        let hop = match self.hops.get(c.backend.0 as usize) {
            Some(h) if h.generation == self.net.generation() && h.addr == daddr => h.hop,
            _ => return Err(slow()),
        };
        let Some(hop) = hop.filter(|h| h.vlan.is_none()) else {
            return Err(slow());
        };
        let Some(IpAddr::V4(src)) = self.net.port_addr(hop.port, false) else {
            return Err(slow());
        };
        let Some(bytes) = frame.data().get(16..18) else {
            return Err(slow());
        };
        let bytes = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        let id = self.ip_id.wrapping_add(1);
        // The outer header carries the decremented TTL; the inner TTL − 1 after it.
        if !rewrite::encap_ipip_v4(
            frame,
            src.to_bits(),
            c.addrs[2],
            id,
            hop.mtu,
            hop.src_mac,
            hop.dst_mac,
        ) {
            return Err(slow());
        }
        self.ip_id = id;
        self.record(
            Decision {
                service: ServiceId(c.service),
                backend: c.backend,
                method: c.method,
                direction: Direction::In,
                new_conn,
            },
            bytes,
        );
        Ok(Verdict::Tx(hop.port))
    }
}
