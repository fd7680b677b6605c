//! SYN-flood and table-pressure defences of one worker.
//!
//! Two kinds:
//!
//! * **IPVS's defence strategies** (`net/netfilter/ipvs/ip_vs_ctl.c`, `update_defense_level`,
//!   run once a second by `defense_work_handler`; `Documentation/networking/ipvs-sysctl.rst`):
//!   `drop_entry`, `drop_packet` and `secure_tcp`, each a mode 0..3 — 0 off, 1 automatic and
//!   currently off, 2 automatic and currently on, 3 always on. In the automatic modes a strategy
//!   switches on when "available memory" falls below `amemthresh` (the mode becomes 2) and off
//!   again when it recovers (the mode becomes 1). `drop_entry` then deletes embryonic and some
//!   idle entries from a random 1/32 of the table each second
//!   ([`ConnTable::drop_random_entries`](crate::conn::ConnTable::drop_random_entries));
//!   `drop_packet` drops one new connection in `rate` (`amemthresh / (amemthresh − available)`,
//!   or `am_droprate` in mode 3); `secure_tcp` swaps in the `tcp_states_dos` transition table.
//!   **xvs's difference:** the kernel measures free system memory in pages; xvs's table is
//!   allocated at start, so it is the table that fills, not memory: "available" is the number of
//!   free entries of the worker's connection table, and `amemthresh` is counted in entries.
//! * **An embryonic budget** (xvs's own, in the spirit of the kernel's SYN backlog): TCP entries
//!   in SYN_RECV / SYNACK may hold at most `embryonic_share` percent of the table; a new SYN
//!   beyond it, or arriving at a full table, evicts the oldest embryonic entry instead of being
//!   dropped. Legitimate clients complete their handshake within a round trip and leave the
//!   embryonic pool; a flood only recycles its own entries. A half-open entry then lives about
//!   `budget / flood rate` (10 000 entries at 250 000 SYN/s: 40 ms); a client whose handshake
//!   takes longer loses its entry before its ACK comes. For DR and TUN services whose scheduler
//!   picks by the packet alone, such an ACK (and the rest of its connection) is routed without
//!   an entry to the backend the scheduler picks again (`stateless_ack_secs`; Katran keeps no
//!   state for new flows under a SYN flood and relies on Maglev the same way), so the eviction
//!   costs nothing there; NAT and FullNAT need the entry for the replies and stay bounded by
//!   the budget (or use the SYN proxy).

/// The defence settings (sysctl names and defaults of IPVS, plus xvs's budget).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefenseConfig {
    /// `drop_entry` mode (0..=3, default 0).
    pub drop_entry: u8,
    /// `drop_packet` mode (0..=3, default 0).
    pub drop_packet: u8,
    /// `secure_tcp` mode (0..=3, default 0).
    pub secure_tcp: u8,
    /// `amemthresh`: free table entries below which the automatic modes switch on (default
    /// 1024; the kernel counts free memory pages).
    pub amemthresh: u32,
    /// `am_droprate`: `drop_packet`'s rate in mode 3 (one in N; default 10).
    pub am_droprate: u32,
    /// Largest share of the table, in percent, that embryonic TCP entries may hold (1..=100;
    /// default 50). Reaching it, or a full table, makes a new SYN evict the oldest embryonic
    /// entry. 0 turns the budget and the eviction off (IPVS: a SYN finding the table full is
    /// dropped).
    pub embryonic_share: u8,
    /// A bare ACK from a backend does not complete a handshake (see
    /// [`ConnTable::set_strict_handshake`](crate::conn::ConnTable::set_strict_handshake));
    /// default on.
    pub strict_handshake: bool,
    /// New connections per second per source prefix, director-wide (0: no limit;
    /// `crate::limits`).
    pub source_rate: u32,
    /// Prefix lengths of the source limit (default /24 and /64).
    pub source_prefix_v4: u8,
    pub source_prefix_v6: u8,
    /// Route a client's TCP segment that finds no entry (not a SYN) statelessly, as Katran does
    /// under a SYN flood, when the director evicted half-open entries within the last
    /// `stateless_ack_secs` seconds (0: never): for a DR or TUN service without persistence
    /// whose scheduler picks by the packet alone (sh, dh, mh, maglev), the segment goes to the
    /// backend the scheduler picks for it, which is the one its evicted entry held while the
    /// backend list is unchanged; no entry is created (default 900: as long as an idle
    /// ESTABLISHED entry lives).
    pub stateless_ack_secs: u32,
    /// SYN proxy: how often the director sends its SYN to a backend again when no SYN-ACK
    /// came (DPVS's `syn_retry`, default 3); after the last one the client gets a RST.
    pub synproxy_syn_retries: u8,
    /// SYN proxy: milliseconds between those SYNs (default 1000, TCP's initial retransmission
    /// timeout, RFC 6298; DPVS waits its 3 s SYN_SENT timeout). At least 1.
    pub synproxy_syn_interval_ms: u32,
}

impl Default for DefenseConfig {
    fn default() -> Self {
        DefenseConfig {
            drop_entry: 0,
            drop_packet: 0,
            secure_tcp: 0,
            amemthresh: 1024,
            am_droprate: 10,
            embryonic_share: 50,
            strict_handshake: true,
            source_rate: 0,
            source_prefix_v4: 24,
            source_prefix_v6: 64,
            stateless_ack_secs: 900,
            synproxy_syn_retries: 3,
            synproxy_syn_interval_ms: 1000,
        }
    }
}

/// The running state of IPVS's strategies (`update_defense_level`'s variables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defense {
    /// Current modes; 1 and 2 switch with the table's pressure, as the sysctls do.
    pub drop_entry: u8,
    pub drop_packet: u8,
    pub secure_tcp: u8,
    pub amemthresh: u32,
    pub am_droprate: u32,
    /// `ipvs->dropentry`: scan for entries to drop this second.
    pub dropentry: bool,
    /// `ipvs->drop_rate` (0: no packet dropped) and its countdown.
    pub drop_rate: u32,
    drop_counter: u32,
    /// `old_secure_tcp`.
    old_secure_tcp: u8,
}

impl Defense {
    pub fn new(cfg: &DefenseConfig) -> Self {
        Defense {
            drop_entry: cfg.drop_entry.min(3),
            drop_packet: cfg.drop_packet.min(3),
            secure_tcp: cfg.secure_tcp.min(3),
            amemthresh: cfg.amemthresh,
            am_droprate: cfg.am_droprate,
            dropentry: false,
            drop_rate: 0,
            drop_counter: 0,
            old_secure_tcp: 0,
        }
    }

    /// `update_defense_level` with `available` free table entries. Returns `Some(on)` when
    /// the `secure_tcp` table must be switched on or off (`ip_vs_protocol_timeout_change`).
    pub fn update(&mut self, available: u32) -> Option<bool> {
        let nomem = available < self.amemthresh;
        // drop_entry
        match self.drop_entry {
            1 if nomem => {
                self.dropentry = true;
                self.drop_entry = 2;
            }
            1 => self.dropentry = false,
            2 if nomem => self.dropentry = true,
            2 => {
                self.dropentry = false;
                self.drop_entry = 1;
            }
            3 => self.dropentry = true,
            _ => self.dropentry = false,
        }
        // drop_packet
        let rate = || self.amemthresh / (self.amemthresh - available).max(1);
        match self.drop_packet {
            1 if nomem => {
                self.drop_rate = rate();
                self.drop_counter = self.drop_rate;
                self.drop_packet = 2;
            }
            1 => self.drop_rate = 0,
            2 if nomem => {
                self.drop_rate = rate();
                self.drop_counter = self.drop_rate;
            }
            2 => {
                self.drop_rate = 0;
                self.drop_packet = 1;
            }
            3 => self.drop_rate = self.am_droprate,
            _ => self.drop_rate = 0,
        }
        // secure_tcp
        let mut change = None;
        match self.secure_tcp {
            0 => {
                if self.old_secure_tcp >= 2 {
                    change = Some(false);
                }
            }
            1 => {
                if nomem {
                    if self.old_secure_tcp < 2 {
                        change = Some(true);
                    }
                    self.secure_tcp = 2;
                } else if self.old_secure_tcp >= 2 {
                    change = Some(false);
                }
            }
            2 => {
                if nomem {
                    if self.old_secure_tcp < 2 {
                        change = Some(true);
                    }
                } else {
                    if self.old_secure_tcp >= 2 {
                        change = Some(false);
                    }
                    self.secure_tcp = 1;
                }
            }
            _ => {
                if self.old_secure_tcp < 2 {
                    change = Some(true);
                }
            }
        }
        self.old_secure_tcp = self.secure_tcp;
        change
    }

    /// `ip_vs_todrop`: whether `drop_packet` drops this new connection (one in `drop_rate`).
    #[inline]
    pub fn todrop(&mut self) -> bool {
        if self.drop_rate == 0 {
            return false;
        }
        self.drop_counter = self.drop_counter.saturating_sub(1);
        if self.drop_counter > 0 {
            return false;
        }
        self.drop_counter = self.drop_rate;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(drop_entry: u8, drop_packet: u8, secure_tcp: u8) -> DefenseConfig {
        DefenseConfig {
            drop_entry,
            drop_packet,
            secure_tcp,
            ..DefenseConfig::default()
        }
    }

    #[test]
    fn automatic_modes_follow_pressure() {
        let mut d = Defense::new(&cfg(1, 1, 1));
        assert_eq!(d.update(5000), None);
        assert_eq!((d.drop_entry, d.drop_packet, d.secure_tcp), (1, 1, 1));
        assert!(!d.dropentry);
        assert_eq!(d.drop_rate, 0);
        // 1024 / (1024 - 768) = 4.
        assert_eq!(d.update(768), Some(true));
        assert_eq!((d.drop_entry, d.drop_packet, d.secure_tcp), (2, 2, 2));
        assert!(d.dropentry);
        assert_eq!(d.drop_rate, 4);
        let dropped = (0..40).filter(|_| d.todrop()).count();
        assert_eq!(dropped, 10);
        // Still under pressure: no change to report.
        assert_eq!(d.update(0), None);
        assert_eq!(d.drop_rate, 1);
        // Recovered: back to 1, secure_tcp off.
        assert_eq!(d.update(2000), Some(false));
        assert_eq!((d.drop_entry, d.drop_packet, d.secure_tcp), (1, 1, 1));
        assert!(!d.dropentry);
        assert!(!d.todrop());
    }

    #[test]
    fn always_and_never() {
        let mut d = Defense::new(&cfg(3, 3, 3));
        assert_eq!(d.update(1_000_000), Some(true));
        assert!(d.dropentry);
        assert_eq!(d.drop_rate, 10);
        assert_eq!(d.update(1_000_000), None);
        let mut d = Defense::new(&cfg(0, 0, 0));
        assert_eq!(d.update(0), None);
        assert!(!d.dropentry);
        assert_eq!(d.drop_rate, 0);
        assert!(!d.todrop());
    }
}
