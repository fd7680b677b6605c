//! Protocol state machines of IPVS connection entries, as `net/netfilter/ipvs/ip_vs_proto_tcp.c`
//! and `ip_vs_proto_udp.c` define them (Linux 6.x).
//!
//! TCP: eleven states and three transition tables (IN = client → director, OUT = backend reply
//! through the director, IO = "input only", used for entries whose replies bypass the director,
//! i.e. DR/TUN entries still flagged NOOUTPUT). The event is taken from the TCP flags with the
//! kernel's priority RST > SYN > FIN > ACK; a segment carrying none of them moves the entry to
//! CLOSE (`set_tcp_state`: `new_state = IP_VS_TCP_S_CLOSE` when `tcp_state_idx() < 0`).
//! The `secure_tcp` defense swaps in `tcp_states_dos`. Every packet sets the entry's timeout from
//! the per-state table; only ESTABLISHED counts as an active connection.
//!
//! SCTP (`ip_vs_proto_sctp.c`): fourteen states, the same three directions, ten events from the
//! chunk type (`sctp_events[]`); only ESTABLISHED is active.
//!
//! UDP has a single state ("UDP", 300 s). Everything else the table may hold (ICMP echo entries
//! if the pipeline ever creates them, AH/ESP) also has one state with a 60 s timeout — an xvs
//! choice, IPVS has no ICMP entries at all.

/// TCP states, numbered as `IP_VS_TCP_S_*`.
pub mod tcp {
    pub const NONE: u8 = 0;
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const TIME_WAIT: u8 = 5;
    pub const CLOSE: u8 = 6;
    pub const CLOSE_WAIT: u8 = 7;
    pub const LAST_ACK: u8 = 8;
    pub const LISTEN: u8 = 9;
    pub const SYNACK: u8 = 10;
    /// Number of TCP states.
    pub const COUNT: usize = 11;

    /// Names as `/proc/net/ip_vs_conn` and `ipvsadm -Lnc` print them.
    pub const NAMES: [&str; COUNT] = [
        "NONE",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "SYNACK",
    ];

    /// TCP header flag bits as they appear in byte 13 of the header.
    pub const FLAG_FIN: u8 = 0x01;
    pub const FLAG_SYN: u8 = 0x02;
    pub const FLAG_RST: u8 = 0x04;
    pub const FLAG_ACK: u8 = 0x10;
}

/// Template states (`IP_VS_CTPL_S_*`): a persistence template becomes ASSURED once one of the
/// connections it controls reaches ESTABLISHED (TCP) or sees a reply (UDP).
pub mod template {
    pub const NONE: u8 = 0;
    pub const ASSURED: u8 = 1;
}

/// SCTP states, numbered as `IP_VS_SCTP_S_*`, and chunk types (RFC 9260 §3.2).
pub mod sctp {
    pub const NONE: u8 = 0;
    pub const INIT1: u8 = 1;
    pub const INIT: u8 = 2;
    pub const COOKIE_SENT: u8 = 3;
    pub const COOKIE_REPLIED: u8 = 4;
    pub const COOKIE_WAIT: u8 = 5;
    pub const COOKIE: u8 = 6;
    pub const COOKIE_ECHOED: u8 = 7;
    pub const ESTABLISHED: u8 = 8;
    pub const SHUTDOWN_SENT: u8 = 9;
    pub const SHUTDOWN_RECEIVED: u8 = 10;
    pub const SHUTDOWN_ACK_SENT: u8 = 11;
    pub const REJECTED: u8 = 12;
    pub const CLOSED: u8 = 13;
    /// Number of SCTP states.
    pub const COUNT: usize = 14;

    /// Names as `ipvsadm -Lnc` prints them.
    pub const NAMES: [&str; COUNT] = [
        "NONE",
        "INIT1",
        "INIT",
        "C-SENT",
        "C-REPLIED",
        "C-WAIT",
        "COOKIE",
        "C-ECHOED",
        "ESTABLISHED",
        "S-SENT",
        "S-RECEIVED",
        "S-ACK-SENT",
        "REJECTED",
        "CLOSED",
    ];

    pub const CHUNK_DATA: u8 = 0;
    pub const CHUNK_INIT: u8 = 1;
    pub const CHUNK_INIT_ACK: u8 = 2;
    pub const CHUNK_ABORT: u8 = 6;
    pub const CHUNK_SHUTDOWN: u8 = 7;
    pub const CHUNK_SHUTDOWN_ACK: u8 = 8;
    pub const CHUNK_ERROR: u8 = 9;
    pub const CHUNK_COOKIE_ECHO: u8 = 10;
    pub const CHUNK_COOKIE_ACK: u8 = 11;
    pub const CHUNK_SHUTDOWN_COMPLETE: u8 = 14;

    /// The chunk type that decides the transition (`set_sctp_state`): the first chunk's type,
    /// except that a COOKIE ECHO or COOKIE ACK followed by an ABORT counts as the ABORT.
    pub fn effective_chunk(first: u8, second: Option<u8>) -> u8 {
        if matches!(first, CHUNK_COOKIE_ECHO | CHUNK_COOKIE_ACK) && second == Some(CHUNK_ABORT) {
            CHUNK_ABORT
        } else {
            first
        }
    }

    /// The effective chunk type of an SCTP packet, from its bytes starting at the SCTP common
    /// header (12 bytes, then chunks of type, flags, length, padded to 4 bytes). This is what
    /// [`ConnTable::on_packet`](crate::conn::ConnTable::on_packet) wants as `flags` for SCTP.
    /// A packet without a whole chunk header gives DATA (the kernel then leaves the state
    /// alone; the difference is that DATA may still move NONE to ESTABLISHED).
    pub fn chunk_of(sctp: &[u8]) -> u8 {
        let Some(h) = sctp.get(12..16) else {
            return CHUNK_DATA;
        };
        let first = h[0];
        let len = u16::from_be_bytes([h[2], h[3]]) as usize;
        let second = if len >= 4 {
            let next = 12 + ((len + 3) & !3);
            sctp.get(next).copied()
        } else {
            None
        };
        effective_chunk(first, second)
    }
}

/// Which transition table a packet uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpDir {
    /// Client → director.
    In = 0,
    /// Backend → director (NAT / FullNAT replies).
    Out = 1,
    /// Client → director on an entry still flagged NOOUTPUT (DR, TUN).
    InputOnly = 2,
}

/// The event a TCP segment causes (`tcp_state_idx`): RST > SYN > FIN > ACK; `None` when the
/// segment has none of those flags (the kernel then moves the entry to CLOSE).
#[inline]
pub fn tcp_event(flags: u8) -> Option<usize> {
    if flags & tcp::FLAG_RST != 0 {
        Some(3)
    } else if flags & tcp::FLAG_SYN != 0 {
        Some(0)
    } else if flags & tcp::FLAG_FIN != 0 {
        Some(1)
    } else if flags & tcp::FLAG_ACK != 0 {
        Some(2)
    } else {
        None
    }
}

const S_ES: u8 = tcp::ESTABLISHED;
const S_SS: u8 = tcp::SYN_SENT;
const S_SR: u8 = tcp::SYN_RECV;
const S_FW: u8 = tcp::FIN_WAIT;
const S_TW: u8 = tcp::TIME_WAIT;
const S_CL: u8 = tcp::CLOSE;
const S_CW: u8 = tcp::CLOSE_WAIT;
const S_LA: u8 = tcp::LAST_ACK;
const S_LI: u8 = tcp::LISTEN;
const S_SA: u8 = tcp::SYNACK;

type Table = [[[u8; tcp::COUNT]; 4]; 3];

/// `tcp_states[]`: [direction][event syn/fin/ack/rst][current state] → next state.
#[rustfmt::skip]
static TCP_STATES: Table = [
    // IN:  sNO   sES   sSS   sSR   sFW   sTW   sCL   sCW   sLA   sLI   sSA
    [
        [S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR], // syn
        [S_CL, S_CW, S_SS, S_TW, S_TW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW], // fin
        [S_ES, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES], // ack
        [S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_SR], // rst
    ],
    // OUT
    [
        [S_SS, S_ES, S_SS, S_SR, S_SS, S_SS, S_SS, S_SS, S_SS, S_LI, S_SR],
        [S_TW, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_TW, S_LA, S_LI, S_TW],
        [S_ES, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_LA, S_ES, S_ES],
        [S_CL, S_CL, S_SS, S_CL, S_CL, S_TW, S_CL, S_CL, S_CL, S_CL, S_CL],
    ],
    // INPUT-ONLY
    [
        [S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR],
        [S_CL, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW],
        [S_ES, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES],
        [S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_CL],
    ],
];

/// `tcp_states_dos[]`, used while the `secure_tcp` defense is on.
#[rustfmt::skip]
static TCP_STATES_SECURE: Table = [
    [
        [S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SA],
        [S_CL, S_CW, S_SS, S_TW, S_TW, S_TW, S_CL, S_CW, S_LA, S_LI, S_SA],
        [S_ES, S_ES, S_SS, S_SR, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_SA],
        [S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_CL],
    ],
    [
        [S_SS, S_ES, S_SS, S_SA, S_SS, S_SS, S_SS, S_SS, S_SS, S_LI, S_SA],
        [S_TW, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_TW, S_LA, S_LI, S_TW],
        [S_ES, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_LA, S_ES, S_ES],
        [S_CL, S_CL, S_SS, S_CL, S_CL, S_TW, S_CL, S_CL, S_CL, S_CL, S_CL],
    ],
    [
        [S_SA, S_ES, S_ES, S_SR, S_SA, S_SA, S_SA, S_SA, S_SA, S_SA, S_SA],
        [S_CL, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW],
        [S_ES, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES],
        [S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_CL],
    ],
];

/// The next TCP state for a segment with `flags` seen in direction `dir` by an entry in
/// `state`. Out-of-range states (never produced by this module) go to CLOSE.
#[inline]
pub fn tcp_next(state: u8, dir: TcpDir, flags: u8, secure: bool) -> u8 {
    let table = if secure {
        &TCP_STATES_SECURE
    } else {
        &TCP_STATES
    };
    match tcp_event(flags) {
        Some(ev) => table[dir as usize][ev]
            .get(state as usize)
            .copied()
            .unwrap_or(S_CL),
        None => S_CL,
    }
}

/// `sctp_events[]`: chunk type → event (DATA, INIT, INIT_ACK, COOKIE_ECHO, COOKIE_ACK, SHUTDOWN,
/// SHUTDOWN_ACK, SHUTDOWN_COMPLETE, ERROR, ABORT = 0..9). Unknown types count as DATA.
#[inline]
pub fn sctp_event(chunk: u8) -> usize {
    match chunk {
        1 => 1,
        2 => 2,
        10 => 3,
        11 => 4,
        7 => 5,
        8 => 6,
        14 => 7,
        9 => 8,
        6 => 9,
        _ => 0, // DATA, SACK, HEARTBEAT(_ACK), ECNE, CWR and anything unknown
    }
}

const Q_I1: u8 = sctp::INIT1;
const Q_IN: u8 = sctp::INIT;
const Q_CS: u8 = sctp::COOKIE_SENT;
const Q_CR: u8 = sctp::COOKIE_REPLIED;
const Q_CW: u8 = sctp::COOKIE_WAIT;
const Q_CO: u8 = sctp::COOKIE;
const Q_CE: u8 = sctp::COOKIE_ECHOED;
const Q_ES: u8 = sctp::ESTABLISHED;
const Q_SS: u8 = sctp::SHUTDOWN_SENT;
const Q_SR: u8 = sctp::SHUTDOWN_RECEIVED;
const Q_SA: u8 = sctp::SHUTDOWN_ACK_SENT;
const Q_RJ: u8 = sctp::REJECTED;
const Q_CL: u8 = sctp::CLOSED;

/// `sctp_states[]`: [direction][event][current state] → next state.
#[rustfmt::skip]
static SCTP_STATES: [[[u8; sctp::COUNT]; 10]; 3] = [
    // INPUT:  sNO   sI1   sIN   sCS   sCR   sCW   sCO   sCE   sES   sSS   sSR   sSA   sRJ   sCL
    [
        [Q_ES, Q_I1, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL], // d
        [Q_I1, Q_IN, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_IN, Q_IN], // i
        [Q_CW, Q_CW, Q_CW, Q_CS, Q_CR, Q_CO, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL], // i_a
        [Q_CR, Q_IN, Q_IN, Q_CR, Q_CR, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL], // c_e
        [Q_ES, Q_I1, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_ES, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL], // c_a
        [Q_SR, Q_I1, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_SR, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL], // s
        [Q_CL, Q_IN, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_ES, Q_CL, Q_SR, Q_CL, Q_RJ, Q_CL], // s_a
        [Q_CL, Q_CL, Q_CL, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_CL, Q_RJ, Q_CL], // s_c
        [Q_CL, Q_I1, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CL, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL], // err
        [Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_RJ, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL], // ab
    ],
    // OUTPUT
    [
        [Q_ES, Q_I1, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_CW, Q_CW, Q_CW, Q_CW, Q_CW, Q_CW, Q_CW, Q_CW, Q_ES, Q_CW, Q_CW, Q_CW, Q_CW, Q_CW],
        [Q_CS, Q_CS, Q_CS, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_CE, Q_CE, Q_CE, Q_CE, Q_CE, Q_CE, Q_CE, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_ES, Q_ES, Q_ES, Q_ES, Q_ES, Q_ES, Q_ES, Q_ES, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_SS, Q_SS, Q_SS, Q_SS, Q_SS, Q_SS, Q_SS, Q_SS, Q_SS, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_SA, Q_SA, Q_SA, Q_SA, Q_SA, Q_CW, Q_CO, Q_CE, Q_ES, Q_SA, Q_SA, Q_SA, Q_RJ, Q_CL],
        [Q_CL, Q_I1, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_CL, Q_RJ, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL],
    ],
    // INPUT-ONLY
    [
        [Q_ES, Q_I1, Q_IN, Q_CS, Q_CR, Q_ES, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_I1, Q_IN, Q_IN, Q_IN, Q_IN, Q_IN, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_IN, Q_IN],
        [Q_CE, Q_CE, Q_CE, Q_CE, Q_CE, Q_CE, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_ES, Q_ES, Q_ES, Q_ES, Q_ES, Q_ES, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_ES, Q_I1, Q_IN, Q_ES, Q_ES, Q_CW, Q_ES, Q_ES, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_SR, Q_I1, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_SR, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_CL, Q_IN, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_CL, Q_CL, Q_SR, Q_CL, Q_RJ, Q_CL],
        [Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_CL, Q_CL, Q_RJ, Q_CL],
        [Q_CL, Q_I1, Q_IN, Q_CS, Q_CR, Q_CW, Q_CO, Q_CE, Q_ES, Q_SS, Q_SR, Q_SA, Q_RJ, Q_CL],
        [Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_RJ, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL, Q_CL],
    ],
];

/// The next SCTP state for a packet whose effective chunk type is `chunk` (see
/// [`sctp::effective_chunk`]). Out-of-range states go to CLOSED.
#[inline]
pub fn sctp_next(state: u8, dir: TcpDir, chunk: u8) -> u8 {
    SCTP_STATES[dir as usize][sctp_event(chunk)]
        .get(state as usize)
        .copied()
        .unwrap_or(Q_CL)
}

/// Per-state timeouts in milliseconds, settable at run time (`ipvsadm --set`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP, indexed by state.
    pub tcp: [u32; tcp::COUNT],
    /// SCTP, indexed by state.
    pub sctp: [u32; sctp::COUNT],
    /// UDP's only state.
    pub udp: u32,
    /// Every other protocol's only state (xvs choice: 60 s).
    pub other: u32,
}

/// Longest timeout the table accepts (24 days): expiry times are kept as wrapping 32-bit
/// millisecond counters compared by signed difference.
pub const MAX_TIMEOUT_MS: u32 = 24 * 24 * 3600 * 1000;

impl Default for Timeouts {
    /// IPVS defaults: NO 2, ES 900, SS 120, SR 60, FW 120, TW 120, CL 10, CW 60, LA 30, LI 120,
    /// SA 120 s; UDP 300 s; SCTP NONE 2, INIT1 4, REJECTED 4, ESTABLISHED 900, others 61 s.
    fn default() -> Self {
        const S: u32 = 1000;
        const RTO: u32 = 61 * S;
        Timeouts {
            tcp: [
                2 * S,
                900 * S,
                120 * S,
                60 * S,
                120 * S,
                120 * S,
                10 * S,
                60 * S,
                30 * S,
                120 * S,
                120 * S,
            ],
            sctp: [
                2 * S,
                4 * S,
                RTO,
                RTO,
                RTO,
                RTO,
                RTO,
                RTO,
                900 * S,
                RTO,
                RTO,
                RTO,
                4 * S,
                RTO,
            ],
            udp: 300 * S,
            other: 60 * S,
        }
    }
}

impl Timeouts {
    /// `ipvsadm --set tcp tcpfin udp` (seconds; 0 keeps the current value): ESTABLISHED,
    /// FIN_WAIT and UDP. Values are clamped to [`MAX_TIMEOUT_MS`].
    pub fn set(&mut self, tcp_secs: u32, tcpfin_secs: u32, udp_secs: u32) {
        let ms = |s: u32| s.saturating_mul(1000).min(MAX_TIMEOUT_MS);
        if tcp_secs != 0 {
            self.tcp[tcp::ESTABLISHED as usize] = ms(tcp_secs);
        }
        if tcpfin_secs != 0 {
            self.tcp[tcp::FIN_WAIT as usize] = ms(tcpfin_secs);
        }
        if udp_secs != 0 {
            self.udp = ms(udp_secs);
        }
    }

    /// The timeout for an entry of `proto` in `state`, in milliseconds.
    #[inline]
    pub fn get(&self, proto: u8, state: u8) -> u32 {
        match proto {
            6 => self.tcp.get(state as usize).copied().unwrap_or(self.tcp[0]),
            17 => self.udp,
            132 => self
                .sctp
                .get(state as usize)
                .copied()
                .unwrap_or(self.sctp[0]),
            _ => self.other,
        }
    }
}

/// The state name `ipvsadm -Lnc` prints (`ip_vs_state_name`).
pub fn state_name(proto: u8, state: u8, is_template: bool) -> &'static str {
    if is_template {
        return match state {
            template::NONE => "NONE",
            template::ASSURED => "ASSURED",
            _ => "ERR!",
        };
    }
    match proto {
        6 => tcp::NAMES.get(state as usize).copied().unwrap_or("ERR!"),
        17 => "UDP",
        132 => sctp::NAMES.get(state as usize).copied().unwrap_or("ERR!"),
        0 => "NONE",
        1 | 58 => "ICMP",
        _ => "NONE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_priority() {
        use tcp::*;
        assert_eq!(
            tcp_event(FLAG_RST | FLAG_SYN | FLAG_FIN | FLAG_ACK),
            Some(3)
        );
        assert_eq!(tcp_event(FLAG_SYN | FLAG_FIN | FLAG_ACK), Some(0));
        assert_eq!(tcp_event(FLAG_FIN | FLAG_ACK), Some(1));
        assert_eq!(tcp_event(FLAG_ACK), Some(2));
        assert_eq!(tcp_event(0x08), None); // PSH only
        assert_eq!(tcp_next(ESTABLISHED, TcpDir::In, 0x08, false), CLOSE);
        assert_eq!(tcp_next(200, TcpDir::In, FLAG_ACK, false), CLOSE);
    }

    #[test]
    fn sctp_chunk_from_bytes() {
        let common = [0x13, 0x88, 0x13, 0x88, 1, 2, 3, 4, 0, 0, 0, 0];
        let mut init = common.to_vec();
        init.extend_from_slice(&[1, 0, 0, 20]);
        init.extend_from_slice(&[0; 16]);
        assert_eq!(sctp::chunk_of(&init), sctp::CHUNK_INIT);
        // COOKIE ECHO of 7 bytes (padded to 8), then ABORT.
        let mut ce = common.to_vec();
        ce.extend_from_slice(&[10, 0, 0, 7, 0xAA, 0xBB, 0xCC, 0]);
        ce.extend_from_slice(&[6, 0, 0, 4]);
        assert_eq!(sctp::chunk_of(&ce), sctp::CHUNK_ABORT);
        // The same COOKIE ECHO followed by DATA stays a COOKIE ECHO; cut short, too.
        ce[20] = 0;
        assert_eq!(sctp::chunk_of(&ce), sctp::CHUNK_COOKIE_ECHO);
        assert_eq!(sctp::chunk_of(&ce[..18]), sctp::CHUNK_COOKIE_ECHO);
        assert_eq!(sctp::chunk_of(&common), sctp::CHUNK_DATA);
        assert_eq!(sctp::chunk_of(&[]), sctp::CHUNK_DATA);
    }

    #[test]
    fn timeouts_set_zero_keeps() {
        let mut t = Timeouts::default();
        t.set(0, 30, 0);
        assert_eq!(t.get(6, tcp::ESTABLISHED), 900_000);
        assert_eq!(t.get(6, tcp::FIN_WAIT), 30_000);
        assert_eq!(t.get(17, 0), 300_000);
        t.set(u32::MAX, 0, 1);
        assert_eq!(t.get(6, tcp::ESTABLISHED), MAX_TIMEOUT_MS);
        assert_eq!(t.get(17, 0), 1000);
    }
}
