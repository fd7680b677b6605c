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
//! 4. the rewrite, one arm per method and direction, with the next hop from the per-backend
//!    cache (toward a backend) or the gateway route (toward a client): NAT / FullNAT / DR with
//!    [`forward_parsed_v4`] (TTL − 1, the method's address and port changes, each checksum
//!    updated once; the length and protocol those of the parser), TUN with
//!    [`encap_parsed_ipip_v4`]; the new MAC addresses, the traffic counters and the decision.
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

use crate::conn::{ConnId, ConnV4, Direction, Method, TouchV4};
use crate::net::{Hop, LinkV4};
use crate::wire::parse::{reread_v4, FastV4};
use crate::wire::proto::TCP;
use crate::wire::rewrite::{encap_parsed_ipip_v4, forward_parsed_v4};
use crate::wire::{parse, Frag, Packet, Parsed};
use crate::{DropReason, Frame, PortId, Time, Verdict};

use super::{BackendId, Decision, FastHop, Pipeline, ServiceId, Target};

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
    Rewrite(ConnId, Direction),
}

impl Pipeline {
    /// [`Self::process`] for a frame [`parse_v4`](crate::wire::parse::parse_v4) accepted,
    /// whose tuple hashes to `h` ([`ConnTable::hash_v4`](crate::conn::ConnTable::hash_v4)),
    /// `mac` being [`Self::port_mac`] of `ingress`.
    #[inline(always)]
    pub(super) fn process_v4(
        &mut self,
        now: Time,
        ingress: PortId,
        mac: u64,
        frame: &mut Frame,
        f: FastV4,
        h: u32,
    ) -> Verdict {
        match self.fast_v4(now, mac, frame, f, h) {
            Ok(port) => {
                // `account` of a forwarded frame (`record` set the decision).
                self.answered = None;
                self.counters.rx += 1;
                self.counters.tx += 1;
                Verdict::Tx(port)
            }
            Err(slow) => self.slow_v4(now, ingress, frame, slow),
        }
    }

    /// The established-flow path: the port a forwarded frame leaves by (its decision recorded,
    /// nothing else accounted), or where the full pipeline takes over. No calls but the route
    /// lookup of a reply, so the compiler keeps its values in registers.
    #[inline(always)]
    fn fast_v4(
        &mut self,
        now: Time,
        mac: u64,
        frame: &mut Frame,
        f: FastV4,
        h: u32,
    ) -> Result<PortId, Slow> {
        // `hygiene::l2` of an untagged frame: unicast and, when the port's MAC is known
        // (`mac`, 0 if not), its.
        let dst = f.dst_mac;
        let to_us = dst & 1 == 0 && (mac == 0 || dst == mac);
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
            h,
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
            TouchV4::Steady(id, dir, c) => self
                .rewrite_v4(frame, &c, dir, false, f.ip_end, f.proto == TCP)
                .ok_or(Slow::Rewrite(id, dir)),
            TouchV4::Other => Err(Slow::Lookup),
            TouchV4::Miss => Err(Slow::Miss),
        }
    }

    /// The cached next hop toward backend `backend` at IPv4 address `addr` (host order) if it
    /// is current and untagged (`next_hop`'s cache hit).
    #[inline(always)]
    fn cached_hop_v4(&self, backend: BackendId, addr: u32) -> Option<&LinkV4> {
        self.cached_fast_hop_v4(backend, addr).map(|f| &f.link)
    }

    /// [`Self::cached_hop_v4`] with the port's IPv4 address.
    #[inline(always)]
    fn cached_fast_hop_v4(&self, backend: BackendId, addr: u32) -> Option<&FastHop> {
        let h = self.hops.get(backend.0 as usize)?;
        if h.generation != self.net.generation() {
            return None;
        }
        h.fast.as_ref().filter(|f| f.addr == addr)
    }

    /// `next_hop` toward an IPv4 client on a link of the director (a neighbour lookup).
    #[cold]
    #[inline(never)]
    fn on_link_hop(&self, client: u32) -> Option<Hop> {
        self.net.next_hop(IpAddr::V4(Ipv4Addr::from_bits(client)))
    }

    /// The full pipeline from where the established-flow path left the frame, and `account`.
    #[cold]
    #[inline(never)]
    fn slow_v4(&mut self, now: Time, ingress: PortId, frame: &mut Frame, slow: Slow) -> Verdict {
        self.last = None;
        self.answered = None;
        self.counters.rx += 1;
        let v = self.slow_v4_verdict(now, ingress, frame, slow);
        self.account(v)
    }

    /// The verdict of the full pipeline from where the established-flow path left the frame.
    #[inline(always)]
    fn slow_v4_verdict(
        &mut self,
        now: Time,
        ingress: PortId,
        frame: &mut Frame,
        slow: Slow,
    ) -> Verdict {
        // The frame is unchanged since `parse_v4` accepted it: reading its fields again gives
        // the packet `parse_v4` read (and `parse` would give).
        let Some(p) = reread_v4(frame.data()) else {
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
            Slow::Rewrite(id, dir) => {
                let Some(c) = self.conns.get_v4(id) else {
                    return Verdict::Drop(DropReason::NoConnection);
                };
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
        if let (true, Ok(end)) = (self.fast_path && is_fast(&p), u32::try_from(p.ip_end)) {
            if let Some(port) = self.rewrite_v4(frame, c, dir, new_conn, end, p.proto == TCP) {
                return Verdict::Tx(port);
            }
        }
        self.rewrite(now, ingress, frame, p, &Target::from(*c), dir, new_conn)
    }

    /// `rewrite_frame` for an unfragmented IPv4 TCP / UDP packet (as
    /// [`parse_v4`](crate::wire::parse::parse_v4) accepts it; `ip_end` and `tcp` its end in the
    /// frame and protocol as the parser read them, the other fields read from the frame) of an
    /// IPv4 connection, when the next hop is cached (inbound) or found (outbound) and
    /// untagged, the method keeps the packet's size (not TUN inbound), the TTL is above 1, the
    /// packet fits the MTU and (UDP) carries a checksum: the same bytes, traffic counters and
    /// decision, and the port of its `Verdict::Tx`. `None` with nothing changed otherwise:
    /// `rewrite_frame`'s to do.
    #[inline(always)]
    fn rewrite_v4(
        &mut self,
        frame: &mut Frame,
        c: &ConnV4,
        dir: Direction,
        new_conn: bool,
        ip_end: u32,
        tcp: bool,
    ) -> Option<PortId> {
        let [client, vaddr, daddr, laddr] = c.addrs;
        let [cport, vport, dport, lport] = c.ports;
        let shape = (ip_end, tcp);
        // Each method's address and port changes, as `rewrite_frame` makes them; one arm per
        // method and direction, each with its own copy of the rewrite.
        match (c.method, dir) {
            (Method::Nat, Direction::In) => {
                self.forward_in_v4(frame, c, new_conn, shape, None, Some((daddr, dport)))
            }
            (Method::Nat, Direction::Out) => {
                self.forward_out_v4(frame, c, new_conn, shape, Some((vaddr, vport)), None)
            }
            (Method::FullNat, Direction::In) => {
                let (src, dst) = (Some((laddr, lport)), Some((daddr, dport)));
                self.forward_in_v4(frame, c, new_conn, shape, src, dst)
            }
            (Method::FullNat, Direction::Out) => {
                let (src, dst) = (Some((vaddr, vport)), Some((client, cport)));
                self.forward_out_v4(frame, c, new_conn, shape, src, dst)
            }
            (Method::Dr, Direction::In) => {
                self.forward_in_v4(frame, c, new_conn, shape, None, None)
            }
            (Method::Dr | Method::Tunnel, Direction::Out) => {
                self.forward_out_v4(frame, c, new_conn, shape, None, None)
            }
            (Method::Tunnel, Direction::In) => self.tunnel_v4(frame, c, new_conn, ip_end),
        }
    }

    /// [`Self::rewrite_v4`] toward a backend: `next_hop` from its cache.
    #[inline(always)]
    fn forward_in_v4(
        &mut self,
        frame: &mut Frame,
        c: &ConnV4,
        new_conn: bool,
        shape: (u32, bool),
        src: Option<(u32, u16)>,
        dst: Option<(u32, u16)>,
    ) -> Option<PortId> {
        let link = self.cached_hop_v4(c.backend, c.addrs[2])?;
        let port = forward_link_v4(frame, shape, link, src, dst)?;
        self.record_v4(c, Direction::In, new_conn, shape.0);
        Some(port)
    }

    /// [`Self::rewrite_v4`] toward a client: `next_hop` through a gateway route (a cache miss
    /// or an on-link client is resolved by the full path).
    #[inline(always)]
    fn forward_out_v4(
        &mut self,
        frame: &mut Frame,
        c: &ConnV4,
        new_conn: bool,
        shape: (u32, bool),
        src: Option<(u32, u16)>,
        dst: Option<(u32, u16)>,
    ) -> Option<PortId> {
        let client = c.addrs[0];
        let port = match self.net.gateway_link_v4(client) {
            Some(link) => forward_link_v4(frame, shape, link?, src, dst)?,
            None => {
                let link = LinkV4::of(&self.on_link_hop(client)?)?;
                forward_link_v4(frame, shape, &link, src, dst)?
            }
        };
        self.record_v4(c, Direction::Out, new_conn, shape.0);
        Some(port)
    }

    /// The traffic counters and the decision of a packet of `c` forwarded by
    /// [`Self::rewrite_v4`] (`ip_end`: its end in the frame, as the parser read it).
    #[inline(always)]
    fn record_v4(&mut self, c: &ConnV4, dir: Direction, new_conn: bool, ip_end: u32) {
        self.record(
            Decision {
                service: ServiceId(c.service),
                backend: c.backend,
                method: c.method,
                direction: dir,
                new_conn,
            },
            (ip_end as usize).saturating_sub(FastV4::L3),
        );
    }

    /// `rewrite_frame` + `tunnel` for an IPv4 packet to an IPv4 TUN backend whose next hop is
    /// cached and untagged: IPIP encapsulation with the egress port's address as the outer
    /// source and the inner TTL − 1 ([`encap_parsed_ipip_v4`]), the same bytes, counters,
    /// decision, IPv4 identification and port of its `Verdict::Tx`. `None` with nothing
    /// changed when the full path has to decide (TTL ≤ 1, too big, no headroom, no IPv4 address on the port, an
    /// uncached hop).
    #[inline(always)]
    fn tunnel_v4(
        &mut self,
        frame: &mut Frame,
        c: &ConnV4,
        new_conn: bool,
        ip_end: u32,
    ) -> Option<PortId> {
        let h = self.cached_fast_hop_v4(c.backend, c.addrs[2])?;
        let (hop, src) = (h.link, h.port_v4?);
        let id = self.ip_id.wrapping_add(1);
        // The inner packet's length as the parser read it.
        let inner = (ip_end as usize).checked_sub(FastV4::L3)?;
        // The outer header carries the decremented TTL; the inner TTL − 1 after it.
        let bytes = encap_parsed_ipip_v4(frame, inner, src, c.addrs[2], id, hop.mtu, &hop.macs)?;
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
        Some(hop.port)
    }
}

/// The rest of [`Pipeline::rewrite_v4`] once the next hop `link` is known: the MTU, TTL − 1 and
/// the `src` / `dst` changes ([`forward_parsed_v4`]), the MACs and the frame's end; the port
/// the frame leaves by. `shape`: the packet's end in the frame and whether it is TCP, as the
/// parser read them. `None` with nothing changed when the packet is too big, its TTL ≤ 1 or
/// (UDP) it has no checksum.
#[inline(always)]
fn forward_link_v4(
    frame: &mut Frame,
    (ip_end, tcp): (u32, bool),
    link: &LinkV4,
    src: Option<(u32, u16)>,
    dst: Option<(u32, u16)>,
) -> Option<PortId> {
    // The packet's length as the parser read it.
    let bytes = ip_end.checked_sub(FastV4::L3 as u32)?;
    if bytes > u32::from(link.mtu) {
        return None;
    }
    let d = frame.data_mut();
    if !forward_parsed_v4(d, tcp, src, dst) {
        // Nothing changed (TTL ≤ 1, UDP without a checksum).
        return None;
    }
    // The link header in place (`rewrite::set_link` for an untagged hop): the MACs.
    *d.first_chunk_mut::<12>()? = link.macs;
    // Ethernet padding and trailers stay behind (the parser checked that the packet ends
    // inside the frame).
    frame.truncate(ip_end as usize);
    Some(link.port)
}
