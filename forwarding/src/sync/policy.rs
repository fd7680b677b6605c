//! When a sync master sends a connection: the kernel's `ip_vs_sync_conn_needed` and the
//! control walk of `ip_vs_sync_conn` (`net/netfilter/ipvs/ip_vs_sync.c`, protocol version 1),
//! with the sysctls that steer them (`Documentation/networking/ipvs-sysctl.rst`):
//!
//! * `sync_threshold` = (threshold, period), default (3, 50): a connection is sent when its
//!   inbound packet count `pkts` satisfies `pkts % period == threshold` (period 0 and no
//!   refresh period: `pkts == threshold`). Templates skip this test.
//! * Only some states are worth sending: TCP ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT,
//!   TIME_WAIT; SCTP ESTABLISHED, SHUTDOWN_SENT, SHUTDOWN_RECEIVED, SHUTDOWN_ACK_SENT, CLOSED;
//!   every UDP (and other single-state protocol) entry; every template. A change into one of
//!   these states other than ESTABLISHED (compared with the state at the last send,
//!   `old_state`) is sent at once.
//! * `sync_refresh_period` (seconds, default 0 = off): when on, an update whose end time
//!   (now + timeout) moved less than min(refresh period, max(timeout / 2, 10 s)) since the last
//!   send is skipped, except for up to `sync_retries` (0–3) resends spaced by refresh / 8.
//! * `sync_persist_mode` (default 0): when on, connections controlled by a template are not
//!   sent (their templates are).
//! * After the connection itself, its controlling template is considered the same way, with
//!   the template's own `in_pkts` counted up once (`atomic_inc_return(&ct->in_pkts)`).
//!
//! Time is milliseconds (the kernel counts jiffies and keeps the retry count in the low two
//! bits of `sync_endtime`; here [`SyncMeta`] keeps them apart).

use crate::conn::state::{sctp, tcp};
use crate::conn::SyncMeta;

/// The master's knobs, with the kernel's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncPolicy {
    /// `sync_threshold`, first value (default 3).
    pub threshold: u32,
    /// `sync_threshold`, second value: the period (default 50; 0 = only at `threshold`).
    pub period: u32,
    /// `sync_refresh_period` in milliseconds (kernel: seconds; default 0 = off).
    pub refresh_period_ms: u32,
    /// `sync_retries` (0–3, default 0).
    pub retries: u8,
    /// `sync_persist_mode` (default off).
    pub persist_mode: bool,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            threshold: 3,
            period: 50,
            refresh_period_ms: 0,
            retries: 0,
            persist_mode: false,
        }
    }
}

/// What the decision reads of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub proto: u8,
    pub state: u8,
    pub template: bool,
    /// Controlled by a template (the kernel's `in_persistence`).
    pub in_persistence: bool,
    /// The entry's inbound packet count as the kernel passes it (`pkts`).
    pub pkts: u32,
    /// Current timeout and expiry (wrapping ms).
    pub timeout_ms: u32,
    pub expires: u32,
}

const TCP_SYNCED: u32 = 1 << tcp::ESTABLISHED
    | 1 << tcp::FIN_WAIT
    | 1 << tcp::CLOSE
    | 1 << tcp::CLOSE_WAIT
    | 1 << tcp::TIME_WAIT;
const SCTP_SYNCED: u32 = 1 << sctp::ESTABLISHED
    | 1 << sctp::SHUTDOWN_SENT
    | 1 << sctp::SHUTDOWN_RECEIVED
    | 1 << sctp::SHUTDOWN_ACK_SENT
    | 1 << sctp::CLOSED;

impl SyncPolicy {
    /// Whether to send `c` now (`ip_vs_sync_conn_needed`); updates `meta` when it says yes.
    pub fn needed(&self, c: &Candidate, meta: &mut SyncMeta, now_ms: u32) -> bool {
        let force;
        if c.template {
            force = false;
        } else if self.persist_mode && c.in_persistence {
            return false;
        } else if c.proto == 6 || c.proto == 132 {
            let (synced, established) = if c.proto == 6 {
                (TCP_SYNCED, tcp::ESTABLISHED)
            } else {
                (SCTP_SYNCED, sctp::ESTABLISHED)
            };
            if c.state >= 32 || synced & (1 << c.state) == 0 {
                return false;
            }
            force = c.state != meta.old_state;
            if force && c.state != established {
                return self.set(c, meta, 0);
            }
        } else {
            force = false;
        }
        let _ = force; // Only decides the jump above: the kernel's cmpxchg always succeeds here.
        let mut retries = 0u8;
        if self.refresh_period_ms > 0 {
            let end = c.expires;
            let diff = (end.wrapping_sub(meta.endtime) as i32).unsigned_abs();
            let min_diff = (c.timeout_ms / 2).max(10_000);
            if diff < self.refresh_period_ms.min(min_diff) {
                if meta.retries >= self.retries {
                    return false;
                }
                // The last send was at endtime - timeout; resend no sooner than refresh / 8.
                let last = meta.endtime.wrapping_sub(c.timeout_ms);
                let next = last.wrapping_add(self.refresh_period_ms >> 3);
                if (now_ms.wrapping_sub(next) as i32) < 0 {
                    return false;
                }
                retries = meta.retries + 1;
            }
        }
        if self.period > 0 {
            if !c.template && c.pkts % self.period != self.threshold {
                return false;
            }
        } else if self.refresh_period_ms == 0 && c.pkts != self.threshold {
            return false;
        }
        self.set(c, meta, retries)
    }

    fn set(&self, c: &Candidate, meta: &mut SyncMeta, retries: u8) -> bool {
        meta.old_state = c.state;
        meta.endtime = c.expires;
        meta.retries = retries;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_conn(state: u8, pkts: u32) -> Candidate {
        Candidate {
            proto: 6,
            state,
            template: false,
            in_persistence: false,
            pkts,
            timeout_ms: 900_000,
            expires: 1_000_000,
        }
    }

    #[test]
    fn established_tcp_goes_at_3_53_103() {
        let p = SyncPolicy::default();
        let mut m = SyncMeta::default();
        let sent: Vec<u32> = (1..=120)
            .filter(|&n| p.needed(&tcp_conn(tcp::ESTABLISHED, n), &mut m, 0))
            .collect();
        assert_eq!(sent, vec![3, 53, 103]);
    }

    #[test]
    fn states_not_synced_never_go() {
        let p = SyncPolicy::default();
        let mut m = SyncMeta::default();
        for s in [
            tcp::SYN_RECV,
            tcp::SYN_SENT,
            tcp::NONE,
            tcp::LAST_ACK,
            tcp::LISTEN,
        ] {
            assert!(!p.needed(&tcp_conn(s, 3), &mut m, 0), "state {s}");
        }
    }

    #[test]
    fn a_change_into_fin_wait_goes_at_once_and_only_once() {
        let p = SyncPolicy::default();
        let mut m = SyncMeta::default();
        assert!(p.needed(&tcp_conn(tcp::ESTABLISHED, 3), &mut m, 0));
        assert!(p.needed(&tcp_conn(tcp::FIN_WAIT, 7), &mut m, 0));
        assert_eq!(m.old_state, tcp::FIN_WAIT);
        // Same state again: back to the packet count rule.
        assert!(!p.needed(&tcp_conn(tcp::FIN_WAIT, 8), &mut m, 0));
        assert!(p.needed(&tcp_conn(tcp::TIME_WAIT, 9), &mut m, 0));
    }

    #[test]
    fn udp_and_templates() {
        let p = SyncPolicy::default();
        let mut m = SyncMeta::default();
        let udp = |pkts| Candidate {
            proto: 17,
            state: 0,
            template: false,
            in_persistence: false,
            pkts,
            timeout_ms: 300_000,
            expires: 0,
        };
        assert!(!p.needed(&udp(2), &mut m, 0));
        assert!(p.needed(&udp(3), &mut m, 0));
        assert!(p.needed(&udp(53), &mut m, 0));
        let tpl = Candidate {
            template: true,
            ..udp(1)
        };
        // Templates go whenever they are considered.
        assert!(p.needed(&tpl, &mut m, 0));
        assert!(p.needed(&Candidate { pkts: 2, ..tpl }, &mut m, 0));
    }

    #[test]
    fn period_zero_sends_once() {
        let p = SyncPolicy {
            period: 0,
            ..SyncPolicy::default()
        };
        let mut m = SyncMeta::default();
        let sent: Vec<u32> = (1..=200)
            .filter(|&n| p.needed(&tcp_conn(tcp::ESTABLISHED, n), &mut m, 0))
            .collect();
        assert_eq!(sent, vec![3]);
    }

    #[test]
    fn persist_mode_skips_controlled_connections() {
        let p = SyncPolicy {
            persist_mode: true,
            ..SyncPolicy::default()
        };
        let mut m = SyncMeta::default();
        let c = Candidate {
            in_persistence: true,
            ..tcp_conn(tcp::ESTABLISHED, 3)
        };
        assert!(!p.needed(&c, &mut m, 0));
        let free = tcp_conn(tcp::ESTABLISHED, 3);
        assert!(p.needed(&free, &mut m, 0));
    }

    #[test]
    fn refresh_period_skips_small_moves_and_retries() {
        // refresh 60 s, 1 retry: with period 0 every packet is a candidate.
        let p = SyncPolicy {
            period: 0,
            refresh_period_ms: 60_000,
            retries: 1,
            ..SyncPolicy::default()
        };
        let mut m = SyncMeta::default();
        let at = |now: u32, pkts| Candidate {
            expires: now.wrapping_add(900_000),
            ..tcp_conn(tcp::ESTABLISHED, pkts)
        };
        // First send: the end time moved a lot from 0 (never sent).
        assert!(p.needed(&at(1_000_000, 1), &mut m, 1_000_000));
        // 1 s later: moved 1 s < 60 s, a retry is allowed only after refresh/8 = 7.5 s.
        assert!(!p.needed(&at(1_001_000, 2), &mut m, 1_001_000));
        assert!(p.needed(&at(1_008_000, 3), &mut m, 1_008_000));
        assert_eq!(m.retries, 1);
        // Retries used up.
        assert!(!p.needed(&at(1_020_000, 4), &mut m, 1_020_000));
        // A move of 60 s or more goes again.
        assert!(p.needed(&at(1_070_000, 5), &mut m, 1_070_000));
        assert_eq!(m.retries, 0);
    }
}
