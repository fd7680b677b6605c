//! What the pipeline decides for one frame, and why it drops the ones it drops.
//!
//! The hot path never returns `Result`: a frame that cannot be forwarded becomes
//! `Verdict::Drop(reason)` and the worker bumps that reason's counter.

/// An egress port of the director: an index into the ports the control plane configured
/// (one per interface the workers transmit on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortId(pub u16);

/// The outcome for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Tx(PortId),
    /// Not ours: hand the frame to the kernel untouched.
    Pass,
    /// Drop it and count the reason.
    Drop(DropReason),
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident => $text:literal,)*) => {
        /// Why a frame was dropped. Each reason has its own counter per worker.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name for logs, metrics and `xvs ctl`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$name => $text,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the headers it claims to carry.
    Truncated => "truncated",
    /// Ethernet/VLAN/IP header inconsistent (bad version, IHL, lengths).
    Malformed => "malformed",
    /// IPv4 header checksum wrong.
    BadIpChecksum => "bad_ip_checksum",
    /// A later fragment of a protocol without ports toward a service, or one the full hold
    /// (`fragment_held`) could not take.
    Fragment => "fragment",
    /// TTL / hop limit would expire on forwarding (toward a backend the sender is also sent
    /// time exceeded, unless rate-limited).
    TtlExceeded => "ttl_exceeded",
    /// No connection and the packet may not create one (e.g. TCP without SYN).
    NoConnection => "no_connection",
    /// A service matched but no backend is eligible (weights 0, all overloaded or down).
    NoBackend => "no_backend",
    /// The connection table is full.
    TableFull => "table_full",
    /// The connection's backend was removed and `expire_nodest_conn` is off.
    BackendGone => "backend_gone",
    /// No route or no resolved neighbour for the next hop.
    NoNeighbour => "no_neighbour",
    /// No free FullNAT local address/port.
    NoLocalPort => "no_local_port",
    /// The frame does not fit the buffer after encapsulation.
    NoHeadroom => "no_headroom",
    /// Too big for the egress MTU with DF set (an ICMP answer was sent or could not be).
    TooBig => "too_big",
    /// An ICMP error that matches no tracked connection.
    IcmpNoConnection => "icmp_no_connection",
    /// Protocol or feature not supported by the configured method.
    Unsupported => "unsupported",
    /// Destination MAC is another host's, not the ingress port's (the kernel's
    /// `PACKET_OTHERHOST`, dropped by `ip_rcv`).
    OtherHost => "other_host",
    /// L2 broadcast / multicast destination carrying a unicast IP destination.
    L2Multicast => "l2_multicast",
    /// 802.1Q tag with a VLAN id not configured on the ingress interface.
    VlanUnconfigured => "vlan_unconfigured",
    /// 802.1Q tag with the reserved VLAN id 4095.
    VlanReserved => "vlan_reserved",
    /// Stacked VLAN tags (QinQ), which xvs does not terminate.
    VlanStacked => "vlan_stacked",
    /// Martian source: IPv4 0/8, 127/8, 224/4, 240/4; IPv6 ::, ::1, ff00::/8, ::ffff:0:0/96.
    MartianSource => "martian_source",
    /// Source address is one of the director's virtual addresses (spoofed).
    SourceIsVip => "source_is_vip",
    /// Source address equals destination address (LAND).
    Land => "land",
    /// IPv4 loose / strict source route option (`accept_source_route = 0`).
    SourceRoute => "source_route",
    /// Malformed IPv4 options (as `ip_options_compile` rejects them).
    BadIpOptions => "bad_ip_options",
    /// Illegal IPv6 extension header chain (hop-by-hop not first, or twice).
    BadExtChain => "bad_ext_chain",
    /// IPv6 routing header with segments left > 0.
    RoutingHeader => "routing_header",
    /// IPv6 hop-by-hop / destination option unknown with a discard action (01, 10, 11), or
    /// options overrunning their header.
    BadExtOption => "bad_ext_option",
    /// IPv6 jumbo payload option (never valid on links with MTU < 65 536).
    BadJumbo => "bad_jumbo",
    /// IPv6 fragment with M = 1 whose fragment data is not a multiple of 8 bytes.
    BadFragmentLength => "bad_fragment_length",
    /// IPv6 UDP with checksum 0 (RFC 8200 §8.1).
    UdpZeroChecksum => "udp_zero_checksum",
    /// Received ICMP error whose checksum does not verify.
    BadIcmpChecksum => "bad_icmp_checksum",
    /// ICMP error about an ICMP error (RFC 1122 §3.2.2).
    IcmpAboutError => "icmp_about_error",
    /// ICMP error whose quote is too short to hold the transport ports.
    IcmpShortQuote => "icmp_short_quote",
    /// ICMP error quoting an IP header that is not one (bad version or IHL).
    IcmpBadQuote => "icmp_bad_quote",
    /// Larger than the egress MTU, DF clear, and fragmentation is off
    /// (`PipelineConfig::fragment`) or impossible (IPv6 outer header, ICMP errors).
    NeedsFragmentation => "needs_fragmentation",
    /// Fragments waiting for [`crate::Pipeline::drain_fragments`] fill the queue.
    FragmentQueueFull => "fragment_queue_full",
    /// A later fragment that came before its first: copied and held (sent after the first one,
    /// counted in `tx_fragments`, or dropped after a second, counted in `fragments_expired`).
    FragmentHeld => "fragment_held",
    /// A fragment that overlaps another of its datagram (the datagram's later fragments are
    /// dropped too, as the kernel discards the whole datagram, RFC 5722), ends beyond 65535
    /// bytes, or is a TCP fragment at offset 8 (RFC 1858's tiny-fragment attack).
    BadFragment => "bad_fragment",
    /// A new connection dropped by IPVS's `drop_packet` defence (one in `drop_rate` while the
    /// table is short of free entries).
    DefenseDropPacket => "drop_packet",
    /// A TCP SYN while embryonic entries fill their share of the table and none could be
    /// evicted.
    EmbryonicLimit => "embryonic_limit",
    /// SYN proxy: an ACK whose cookie is forged, stale or for another connection or service,
    /// or another segment with neither cookie nor connection.
    SynproxyBadCookie => "synproxy_bad_cookie",
    /// SYN proxy: a segment from the client before the backend answered, copied and held (it
    /// is sent on after the backend's SYN-ACK, counted in `synproxy_released`).
    SynproxyHeld => "synproxy_held",
    /// SYN proxy: a segment before the backend answered that is not held (a repeated ACK, a
    /// full hold), or a backend segment that does not answer the director's SYN.
    SynproxyPending => "synproxy_pending",
    /// SYN proxy: a segment of a connection whose backend answered none of the director's
    /// SYNs (`DefenseConfig::synproxy_syn_retries`); the client was sent a RST.
    SynproxyGaveUp => "synproxy_gave_up",
    /// A new connection beyond its service's `conn_rate`.
    ServiceRateLimit => "service_rate_limit",
    /// A new connection beyond its chosen backend's `conn_rate`.
    BackendRateLimit => "backend_rate_limit",
    /// A new connection beyond its source prefix's `source_rate`.
    SourceRateLimit => "source_rate_limit",
}

/// One counter per [`DropReason`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::COUNT])
    }
}

impl DropCounters {
    #[inline]
    pub fn bump(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counters with their names.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.0[r as usize]))
            .filter(|&(_, n)| n > 0)
    }

    pub fn add(&mut self, other: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_by_reason() {
        let mut c = DropCounters::default();
        c.bump(DropReason::TableFull);
        c.bump(DropReason::TableFull);
        c.bump(DropReason::Truncated);
        assert_eq!(c.get(DropReason::TableFull), 2);
        assert_eq!(c.total(), 3);
        let names: Vec<_> = c.iter().map(|(r, n)| (r.as_str(), n)).collect();
        assert_eq!(names, vec![("truncated", 1), ("table_full", 2)]);
    }
}
