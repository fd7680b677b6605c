//! Connection sync in the pipeline: the master's side picks what to send after each inbound
//! packet (the call to `ip_vs_sync_conn` at the end of the kernel's `ip_vs_in`, decided by
//! [`SyncPolicy`]) and queues it in an outbox that the worker drains; the backup's side resolves
//! a received entry against the local services and installs it in the connection table
//! (`ip_vs_proc_conn`). Sockets, timers and message framing live in the binary.

use std::net::{IpAddr, SocketAddr};

use super::Pipeline;
use crate::conn::state::{sctp, tcp};
use crate::conn::{flags as entry_flags, ConnId, Install, Installed};
use crate::service::ServiceKey;
use crate::sync::flags;
use crate::sync::policy::{Candidate, SyncPolicy};
use crate::sync::SyncConn;
use crate::{Method, Time};

/// The master's state in one pipeline.
#[derive(Debug)]
pub(super) struct Master {
    policy: SyncPolicy,
    out: Vec<SyncConn>,
    max_out: usize,
}

/// Per-worker sync counters (summed by the binary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounters {
    /// Entries queued for sending.
    pub queued: u64,
    /// Entries not queued because the outbox was full (the daemon did not drain it in time).
    pub outbox_full: u64,
    /// FullNAT entries, which the kernel's protocol cannot describe (not sent).
    pub skipped_fullnat: u64,
    /// SYN-proxied entries, whose sequence-number translation the protocol cannot carry (not
    /// sent).
    pub skipped_synproxy: u64,
    /// Received entries installed as new entries.
    pub installed: u64,
    /// Received entries that updated an existing entry.
    pub updated: u64,
    /// Received entries that replaced an entry bound to another backend.
    pub replaced: u64,
    /// Received inactive entries for an entry already bound to another backend (ignored).
    pub stale: u64,
    /// Received entries refused, by reason.
    pub refused: [u64; Refused::COUNT],
}

/// Why a received entry was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Addresses of different families.
    Family,
    /// A protocol xvs does not balance (non-template), or a state out of the protocol's range.
    State,
    /// No local service matches (protocol, virtual address and port, or fwmark).
    NoService,
    /// The service has no backend at the destination address and port.
    NoBackend,
    /// The local backend forwards by FullNAT, which needs a local address the message lacks.
    FullNat,
    /// Persistence-engine data (xvs has no persistence engines).
    PersistenceEngine,
    /// The connection table (or its IPv6 slab) is full.
    TableFull,
}

impl Refused {
    pub const COUNT: usize = 7;
    pub const ALL: [Refused; Self::COUNT] = [
        Refused::Family,
        Refused::State,
        Refused::NoService,
        Refused::NoBackend,
        Refused::FullNat,
        Refused::PersistenceEngine,
        Refused::TableFull,
    ];

    /// A short snake_case name for counters.
    pub fn name(self) -> &'static str {
        match self {
            Refused::Family => "family",
            Refused::State => "state",
            Refused::NoService => "no_service",
            Refused::NoBackend => "no_backend",
            Refused::FullNat => "fullnat",
            Refused::PersistenceEngine => "persistence_engine",
            Refused::TableFull => "table_full",
        }
    }
}

/// Template timeout on a backup when the message carries none (version 0): the kernel's 3 min.
const V0_TEMPLATE_TIMEOUT_MS: u32 = 180_000;

impl Pipeline {
    /// Start (`Some`) or stop (`None`) sending: after this, each inbound packet may queue its
    /// connection (and controlling template) in the outbox, at most `max_out` entries between
    /// two [`Self::drain_sync`] calls.
    pub fn set_sync_master(&mut self, policy: Option<SyncPolicy>, max_out: usize) {
        self.sync_master = policy.map(|policy| {
            self.conns.enable_sync_meta();
            Box::new(Master {
                policy,
                out: Vec::with_capacity(max_out.min(4096)),
                max_out,
            })
        });
    }

    /// Whether this pipeline is sending.
    pub fn is_sync_master(&self) -> bool {
        self.sync_master.is_some()
    }

    /// Move the queued entries to `into` (appended).
    pub fn drain_sync(&mut self, into: &mut Vec<SyncConn>) {
        if let Some(m) = self.sync_master.as_mut() {
            into.append(&mut m.out);
        }
    }

    /// Whether entries wait in the outbox.
    #[inline]
    pub fn has_sync_out(&self) -> bool {
        self.sync_master.as_ref().is_some_and(|m| !m.out.is_empty())
    }

    pub fn sync_counters(&self) -> &SyncCounters {
        &self.sync_counters
    }

    /// After an inbound packet of `id` (state and `in_pkts` already updated): queue what the
    /// master sends (`ip_vs_sync_conn`). `one_packet`: the entry is not kept (only its
    /// template is considered).
    pub(super) fn sync_conn(&mut self, id: Option<ConnId>, control: Option<ConnId>, now: Time) {
        let Some(mut m) = self.sync_master.take() else {
            return;
        };
        let now_ms = (now.0 / 1_000_000) as u32;
        let mut cur = id;
        let mut next_control = control;
        let mut pkts = 0;
        if let Some(c) = cur.and_then(|c| self.conns.sync_view(c)) {
            pkts = c.in_pkts;
            next_control = c.control;
        } else {
            cur = None;
        }
        loop {
            if let Some(c) = cur {
                self.consider(&mut m, c, pkts, now_ms);
            }
            let Some(ct) = next_control else {
                break;
            };
            let Some(v) = self.conns.sync_view(ct) else {
                break;
            };
            pkts = if v.template {
                self.conns.bump_in_pkts(ct)
            } else {
                m.policy.threshold
            };
            cur = Some(ct);
            next_control = v.control;
        }
        self.sync_master = Some(m);
    }

    fn consider(&mut self, m: &mut Master, id: ConnId, pkts: u32, now_ms: u32) {
        let Some(v) = self.conns.sync_view(id) else {
            return;
        };
        let in_persistence = v
            .control
            .and_then(|c| self.conns.sync_view(c))
            .is_some_and(|c| c.template);
        let cand = Candidate {
            proto: v.proto,
            state: v.state,
            template: v.template,
            in_persistence,
            pkts,
            timeout_ms: v.timeout_ms,
            expires: self.conns.expires_at(id).unwrap_or(0),
        };
        let Some(meta) = self.conns.sync_meta_mut(id) else {
            return;
        };
        if !m.policy.needed(&cand, meta, now_ms) {
            return;
        }
        if v.method == Method::FullNat {
            self.sync_counters.skipped_fullnat += 1;
            return;
        }
        if self.conns.is_synproxy(id) {
            // Its sequence translation lives in this director only.
            self.sync_counters.skipped_synproxy += 1;
            return;
        }
        if m.out.len() >= m.max_out {
            self.sync_counters.outbox_full += 1;
            return;
        }
        if let Some(s) = self.sync_entry(id) {
            m.out.push(s);
            self.sync_counters.queued += 1;
        }
    }

    /// The sync message entry for a live entry (as `ip_vs_sync_conn` fills it).
    pub fn sync_entry(&self, id: ConnId) -> Option<SyncConn> {
        let c = self.conns.get(id)?;
        let mut f = match c.method {
            Method::Nat | Method::FullNat => flags::MASQ,
            Method::Dr => flags::DROUTE,
            Method::Tunnel => flags::TUNNEL,
        };
        if c.flags & entry_flags::INACTIVE != 0 {
            f |= flags::INACTIVE;
        }
        if c.flags & entry_flags::NOOUTPUT != 0 {
            f |= flags::NOOUTPUT;
        }
        if c.is_template() {
            f |= flags::TEMPLATE;
        }
        let fwmark = match self.snap.svcs.get(c.service as usize).map(|s| s.key) {
            Some(ServiceKey::Fwmark { mark, .. }) => mark,
            _ => 0,
        };
        Some(SyncConn {
            protocol: c.proto,
            flags: f,
            state: u16::from(c.state),
            client: SocketAddr::new(c.client, c.cport),
            virt: SocketAddr::new(c.vaddr, c.vport),
            dest: SocketAddr::new(c.daddr, c.dport),
            fwmark,
            timeout: Some(c.timeout_ms / 1000),
            seq: None,
            has_pe: false,
        })
    }

    /// Every live entry as a sync message entry (a bulk answer), FullNAT entries left out.
    pub fn sync_table(&self) -> Vec<SyncConn> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(next) = self.sync_table_part(from, u32::MAX, &mut out) {
            from = next;
        }
        out
    }

    /// Part of [`Self::sync_table`], so that a worker answers between batches without a long
    /// stall: the live entries among the next `slots` slots of the table from slot `from`,
    /// appended to `out`; the slot to continue from, or `None` at the end.
    pub fn sync_table_part(&self, from: u32, slots: u32, out: &mut Vec<SyncConn>) -> Option<u32> {
        let cap = self.conns.capacity();
        let end = from.saturating_add(slots).min(cap);
        for i in from..end {
            let id = ConnId(i);
            if self.conns.method(id).is_some_and(|m| m != Method::FullNat) {
                out.extend(self.sync_entry(id));
            }
        }
        (end < cap).then_some(end)
    }

    /// The whole table for a successor process (`xvs run --takeover`): every live entry as
    /// a sync entry, with its FullNAT local address and port where it has one (which the sync
    /// protocol cannot carry).
    pub fn takeover_table(&self) -> Vec<(SyncConn, Option<SocketAddr>)> {
        let mut out = Vec::new();
        for i in 0..self.conns.capacity() {
            let id = ConnId(i);
            // The cheap liveness test first: most slots of a large table are free.
            if self.conns.method(id).is_none() {
                continue;
            }
            if let (Some(c), Some(s)) = (self.conns.get(id), self.sync_entry(id)) {
                out.push((s, c.local.map(|(a, p)| SocketAddr::new(a, p))));
            }
        }
        out
    }

    /// Install an entry received from a sync master (`ip_vs_proc_conn`, see
    /// [`crate::conn::ConnTable::install`]). `threshold`: this director's `sync_threshold`,
    /// which becomes the entry's `in_pkts` as on a kernel backup. Counted in
    /// [`Self::sync_counters`].
    pub fn install_synced(
        &mut self,
        s: &SyncConn,
        threshold: u32,
        now: Time,
    ) -> Result<Installed, Refused> {
        self.install_taken(s, None, threshold, now)
    }

    /// [`Self::install_synced`] for an entry of [`Self::takeover_table`]: a FullNAT connection
    /// is installed with its `local` address and port (bound to a local FullNAT backend); without
    /// one it is refused as from a sync master.
    pub fn install_taken(
        &mut self,
        s: &SyncConn,
        local: Option<SocketAddr>,
        threshold: u32,
        now: Time,
    ) -> Result<Installed, Refused> {
        let r = self
            .resolve(s, threshold, local)
            .map(|i| self.conns.install(&i, now));
        let c = &mut self.sync_counters;
        match r {
            Ok(Installed::New(_)) => c.installed += 1,
            Ok(Installed::Updated(_)) => c.updated += 1,
            Ok(Installed::Replaced(_)) => c.replaced += 1,
            Ok(Installed::Stale) => c.stale += 1,
            Ok(Installed::Full) => {
                c.refused[Refused::TableFull as usize] += 1;
                return Err(Refused::TableFull);
            }
            Err(e) => c.refused[e as usize] += 1,
        }
        r
    }

    fn resolve(
        &self,
        s: &SyncConn,
        threshold: u32,
        local: Option<SocketAddr>,
    ) -> Result<Install, Refused> {
        let v6 = s.client.is_ipv6();
        if s.virt.is_ipv6() != v6 || s.dest.is_ipv6() != v6 {
            return Err(Refused::Family);
        }
        if s.has_pe {
            return Err(Refused::PersistenceEngine);
        }
        let template = s.flags & flags::TEMPLATE != 0;
        let state = u8::try_from(s.state).map_err(|_| Refused::State)?;
        let states = if template {
            2
        } else {
            match s.protocol {
                6 => tcp::COUNT,
                132 => sctp::COUNT,
                17 => 1,
                _ => return Err(Refused::State),
            }
        };
        if usize::from(state) >= states {
            return Err(Refused::State);
        }
        let vaddr = s.virt.ip();
        let sid = self
            .snap
            .services
            .find(s.fwmark, s.protocol, vaddr, s.virt.port())
            .ok_or(Refused::NoService)?;
        let svc = self
            .snap
            .svcs
            .get(sid.0 as usize)
            .ok_or(Refused::NoService)?;
        if svc.removed {
            return Err(Refused::NoService);
        }
        let daddr: IpAddr = s.dest.ip();
        let dport = s.dest.port();
        // `ip_vs_find_dest`: the backend at (daddr, dport), else one with port 0 / the other.
        let found = |exact: bool| {
            svc.views.iter().map(|v| v.id).find(|&b| {
                self.snap.backends.get(b.0 as usize).is_some_and(|rt| {
                    !rt.removed
                        && rt.addr == daddr
                        && if exact {
                            rt.port == dport
                        } else {
                            rt.port == 0
                        }
                })
            })
        };
        let backend = found(true)
            .or_else(|| found(false))
            .ok_or(Refused::NoBackend)?;
        let method = self.snap.backends[backend.0 as usize].method;
        let local = match local {
            Some(l) if method == Method::FullNat && !template && l.is_ipv6() == v6 => {
                Some((l.ip(), l.port()))
            }
            _ if method == Method::FullNat && !template => return Err(Refused::FullNat),
            _ => None,
        };
        let timeout_ms = match s.timeout {
            Some(secs) => secs.saturating_mul(1000),
            None if template => V0_TEMPLATE_TIMEOUT_MS,
            None => self.conns.timeouts().get(s.protocol, state),
        };
        Ok(Install {
            proto: s.protocol,
            template,
            client: s.client.ip(),
            cport: s.client.port(),
            vaddr,
            vport: s.virt.port(),
            daddr,
            dport,
            backend,
            service: sid.0,
            method,
            state,
            inactive: s.flags & flags::INACTIVE != 0,
            timeout_ms,
            in_pkts: threshold,
            local,
        })
    }
}
