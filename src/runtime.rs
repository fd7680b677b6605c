//! The running director's control side: the desired state, its publication to the workers, and
//! the read-outs (counters, connection lists) that `xvs ctl`, the metrics and the logs show.
//!
//! Each worker runs a [`RuntimeProcessor`]: the forwarding pipeline plus a report slot. Commands
//! ([`Command`]: a new snapshot to install, a counter reset, a request for its connection
//! list) reach it through the worker's one inbox (`worker::Inbox`, drained by the worker loop
//! between two batches, which calls [`FrameProcessor::command`]); in `housekeeping`, once per
//! round, it expires connections and, about twice a second, publishes a report of its counters.
//!
//! A new desired state is applied once, here on the control side ([`Workers::publish`] →
//! `Shared::apply`: ids, scheduler updates, sh/dh/mh/maglev tables built once), and each worker
//! only installs the resulting immutable snapshot (an `Arc` swap) between two batches. What the
//! workers share at run time is the per-backend counts (atomics written on connection events)
//! and each service's scheduler, locked only to schedule a new connection; an established
//! flow's packet takes no lock and writes nothing shared.
//!
//! A new per-worker command: add a variant to [`Command`], handle it in
//! `RuntimeProcessor::command`, and send it from the control side with [`Workers::broadcast`]
//! (no answer), [`Workers::send`] (one worker) or a reply channel as [`Workers::connections`]
//! does.
//!
//! Traffic counters from several workers combine by addition; the connection counts are the
//! director's own (one shared set, read from [`Workers::counts`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use xvs_forwarding::conn::ConnListing;
use xvs_forwarding::pipeline::SyncCounters;
use xvs_forwarding::pipeline::{ServiceReport, Shared, Snapshot};
use xvs_forwarding::service::{MarkRule, Service, ServiceKey};
use xvs_forwarding::sync::policy::SyncPolicy;
use xvs_forwarding::sync::SyncConn;
use xvs_forwarding::{Counters, Frame, Pipeline, PortId, Time, Verdict};

use crate::sync::daemon::SyncOutbox;
use crate::worker::{FrameProcessor, Inbox};

/// Expiry work per loop round (see `ConnTable::expire`).
const HOUSEKEEPING_BUDGET: u32 = 64;

/// How often a worker publishes its report.
const REPORT_EVERY: Duration = Duration::from_millis(500);

/// A command for the workers.
pub enum Command {
    /// Run this snapshot (applied once by the control side); the worker answers when it does.
    Install {
        snap: Arc<Snapshot>,
        done: Sender<()>,
    },
    /// `ipvsadm -Z`.
    Zero(Option<ServiceKey>),
    /// `ipvsadm --set tcp tcpfin udp`.
    Timeouts(u32, u32, u32),
    /// `--source-rate`: rate, IPv4 and IPv6 prefix lengths.
    SourceLimit(u32, u8, u8),
    /// Send the connection list.
    ListConnections(Sender<Vec<ConnListing>>),
    /// Become a sync master (queue entries by `SyncPolicy` and hand them to the daemon's
    /// outbox) or, with `None`, stop.
    SyncMaster(Option<(SyncPolicy, SyncOutbox)>),
    /// Send the table's entries as sync entries (a bulk resync answer), a part at a time:
    /// those in `slots` slots (bulk resync: [`SYNC_TABLE_SLOTS`]) from slot `from`, and where
    /// to go on (`None`: done).
    SyncTable {
        from: u32,
        slots: u32,
        reply: Sender<(Vec<SyncConn>, Option<u32>)>,
    },
    /// Send the whole table for a successor process (`Pipeline::takeover_table`).
    TakeoverTable(Sender<Vec<TakenConn>>),
    /// Install a predecessor's table (`Pipeline::install_taken`; `threshold` as for
    /// [`Command::InstallSynced`]).
    InstallTaken {
        conns: Vec<TakenConn>,
        threshold: u32,
    },
    /// Install entries received by the backup daemon (`threshold`: the director's
    /// `sync_threshold`, their `in_pkts`).
    InstallSynced {
        conns: Vec<SyncConn>,
        threshold: u32,
    },
}

/// A connection-table entry as a successor takes it over: its sync record and, for FullNAT,
/// its local address and port.
pub type TakenConn = (SyncConn, Option<std::net::SocketAddr>);

/// A desired state as the workers receive it.
#[derive(Debug, Clone)]
pub struct Published {
    pub services: Vec<Service>,
    pub marks: Vec<MarkRule>,
}

/// What a worker last published.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    pub counters: Counters,
    pub services: Vec<ServiceReport>,
    pub connections: u32,
    pub sync: SyncCounters,
    /// Half-open TCP entries in the table.
    pub embryonic: u32,
    /// The defence modes now (`drop_entry`, `drop_packet`, `secure_tcp`; 2 = switched on).
    pub defense: (u8, u8, u8),
}

/// The worker's side: the pipeline and its report slot.
pub struct RuntimeProcessor {
    pipe: Pipeline,
    report: Arc<Mutex<WorkerReport>>,
    last_report: Option<Time>,
    /// Where the pipeline's sync entries go while this worker is a sync master.
    sync_out: Option<SyncOutbox>,
}

/// Table slots a worker walks per bulk-resync command (a few hundred µs of work).
pub const SYNC_TABLE_SLOTS: u32 = 16_384;

/// Most sync entries a pipeline queues between two housekeeping rounds.
const SYNC_OUTBOX: usize = 65_536;

impl RuntimeProcessor {
    /// Apply one command from the worker's inbox.
    fn take_command(&mut self, now: Time, cmd: Command) {
        match cmd {
            Command::Install { snap, done } => {
                self.pipe.install(snap);
                let _ = done.send(());
                self.publish();
            }
            Command::Zero(key) => {
                self.pipe.zero_traffic(key.as_ref());
                self.publish();
            }
            Command::Timeouts(t, f, u) => self.pipe.set_timeouts(t, f, u),
            Command::SourceLimit(r, p4, p6) => self.pipe.set_source_limit(r, p4, p6),
            Command::ListConnections(reply) => {
                let _ = reply.send(self.pipe.connections().list(now).collect());
            }
            Command::SyncMaster(m) => {
                let (policy, out) = m.unzip();
                self.pipe.set_sync_master(policy, SYNC_OUTBOX);
                self.sync_out = out;
            }
            Command::SyncTable { from, slots, reply } => {
                let mut part = Vec::new();
                let next = self.pipe.sync_table_part(from, slots, &mut part);
                let _ = reply.send((part, next));
            }
            Command::TakeoverTable(reply) => {
                let _ = reply.send(self.pipe.takeover_table());
            }
            Command::InstallTaken { conns, threshold } => {
                for (c, local) in &conns {
                    // Refusals are counted in the pipeline's sync counters.
                    let _ = self.pipe.install_taken(c, *local, threshold, now);
                }
            }
            Command::InstallSynced { conns, threshold } => {
                for c in &conns {
                    // Refusals are counted in the pipeline's sync counters.
                    let _ = self.pipe.install_synced(c, threshold, now);
                }
            }
        }
    }

    fn publish(&mut self) {
        let r = WorkerReport {
            counters: self.pipe.counters().clone(),
            services: self.pipe.report(),
            connections: self.pipe.connections().len(),
            sync: *self.pipe.sync_counters(),
            embryonic: self.pipe.connections().embryonic(),
            defense: {
                let d = self.pipe.defense();
                (d.drop_entry, d.drop_packet, d.secure_tcp)
            },
        };
        if let Ok(mut slot) = self.report.lock() {
            *slot = r;
        }
    }
}

impl FrameProcessor for RuntimeProcessor {
    type Command = Command;

    #[inline]
    fn process(&mut self, now: Time, ingress: PortId, frame: &mut Frame<'_>) -> Verdict {
        self.pipe.process(now, ingress, frame)
    }

    #[inline]
    fn process_batch(
        &mut self,
        now: Time,
        ingress: PortId,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    ) {
        self.pipe.process_batch(now, ingress, frames, verdicts);
    }

    fn set_neighbour(&mut self, ip: IpAddr, _port: PortId, mac: [u8; 6]) {
        self.pipe.network_mut().set_neighbour(ip, mac);
    }

    fn remove_neighbour(&mut self, ip: IpAddr) {
        self.pipe.network_mut().remove_neighbour(ip);
    }

    #[inline]
    fn extra_frames(&mut self, send: &mut dyn FnMut(PortId, &[u8])) {
        if self.pipe.pending_fragments() > 0 {
            self.pipe.drain_fragments(send);
        }
    }

    fn housekeeping(&mut self, now: Time) {
        self.pipe.housekeeping(now, HOUSEKEEPING_BUDGET);
        if let Some(out) = &self.sync_out {
            if self.pipe.has_sync_out() {
                let mut batch = Vec::new();
                self.pipe.drain_sync(&mut batch);
                out.offer(batch);
            }
        }
        let due = self
            .last_report
            .is_none_or(|t| now.0.saturating_sub(t.0) >= REPORT_EVERY.as_nanos() as u64);
        if due {
            self.last_report = Some(now);
            self.publish();
        }
    }

    fn command(&mut self, now: Time, cmd: Command) {
        self.take_command(now, cmd);
    }
}

/// The control side's handle on one worker.
pub struct WorkerHandle {
    inbox: Inbox<Command>,
    report: Arc<Mutex<WorkerReport>>,
}

/// Wrap a worker's pipeline; the handle, which sends into the worker's `inbox`, stays with the
/// control side.
pub fn attach(pipe: Pipeline, inbox: Inbox<Command>) -> (RuntimeProcessor, WorkerHandle) {
    let report = Arc::new(Mutex::new(WorkerReport::default()));
    (
        RuntimeProcessor {
            pipe,
            report: report.clone(),
            last_report: None,
            sync_out: None,
        },
        WorkerHandle { inbox, report },
    )
}

/// Why the workers did not all take a command.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("worker {0} did not answer within {1:?} (stopped or stuck)")]
    Timeout(usize, Duration),
    #[error("the new state cannot be applied: {0}")]
    Refused(#[source] xvs_forwarding::pipeline::BuildError),
    #[error("worker {0} is gone")]
    Gone(usize),
}

/// All workers, from the control side.
pub struct Workers {
    handles: Vec<WorkerHandle>,
    /// What the workers share: the counts and the applied state.
    shared: Arc<Shared>,
    /// How long to wait for a worker to answer a command (it takes it between two batches).
    pub wait: Duration,
}

impl Workers {
    /// The workers of one director, whose pipelines were built on `shared`.
    pub fn new(handles: Vec<WorkerHandle>, shared: Arc<Shared>) -> Self {
        Workers {
            handles,
            shared,
            wait: Duration::from_secs(2),
        }
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Apply a desired state (once, on this thread: the workers' packet loops never build a
    /// scheduler table) and wait until every worker has installed the snapshot. A worker
    /// installs between two batches, so only a stopped or wedged worker makes this time out.
    pub fn publish(&self, state: Published) -> Result<(), PublishError> {
        let (snap, _) = self
            .shared
            .apply(&state.services, state.marks)
            .map_err(PublishError::Refused)?;
        let mut waits = Vec::new();
        for (i, h) in self.handles.iter().enumerate() {
            let (tx, rx) = bounded(1);
            h.inbox
                .send(Command::Install {
                    snap: snap.clone(),
                    done: tx,
                })
                .map_err(|_| PublishError::Gone(i))?;
            waits.push(rx);
        }
        for (i, rx) in waits.into_iter().enumerate() {
            if rx.recv_timeout(self.wait).is_err() {
                return Err(PublishError::Timeout(i, self.wait));
            }
        }
        Ok(())
    }

    /// The state shared by the workers (connection counts, the applied snapshot).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Send a command that needs no answer to every worker.
    pub fn broadcast(&self, make: impl Fn() -> Command) -> Result<(), PublishError> {
        for i in 0..self.handles.len() {
            self.send(i, make())?;
        }
        Ok(())
    }

    /// Send a command to worker `i`.
    pub fn send(&self, i: usize, cmd: Command) -> Result<(), PublishError> {
        let h = self.handles.get(i).ok_or(PublishError::Gone(i))?;
        h.inbox.send(cmd).map_err(|_| PublishError::Gone(i))
    }

    /// Each worker's inbox, for a thread that sends commands on its own (the sync daemons).
    pub fn inboxes(&self) -> Vec<Inbox<Command>> {
        self.handles.iter().map(|h| h.inbox.clone()).collect()
    }

    /// Every worker's connection list, concatenated.
    pub fn connections(&self) -> Result<Vec<ConnListing>, PublishError> {
        let mut out = Vec::new();
        for (i, h) in self.handles.iter().enumerate() {
            let (tx, rx) = bounded(1);
            h.inbox
                .send(Command::ListConnections(tx))
                .map_err(|_| PublishError::Gone(i))?;
            out.extend(
                rx.recv_timeout(self.wait)
                    .map_err(|_| PublishError::Timeout(i, self.wait))?,
            );
        }
        Ok(out)
    }

    /// The workers' last reports.
    pub fn reports(&self) -> Vec<WorkerReport> {
        self.handles
            .iter()
            .map(|h| h.report.lock().map(|r| r.clone()).unwrap_or_default())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xvs_forwarding::net::Network;
    use xvs_forwarding::PipelineConfig;

    fn pipeline() -> Pipeline {
        Pipeline::new(PipelineConfig::default(), &[], vec![], Network::default()).unwrap()
    }

    #[test]
    fn commands_are_taken_between_batches_and_answered() {
        let (inbox, rx) = crate::worker::inbox();
        let pipe = pipeline();
        let shared = pipe.shared().clone();
        let (mut proc, handle) = attach(pipe, inbox);
        let workers = Workers {
            handles: vec![handle],
            shared,
            wait: Duration::from_secs(5),
        };
        // A worker thread that only does housekeeping rounds.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            let mut now = Time::from_secs(1);
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                now.0 += 1_000_000;
                // What the worker loop does with its inbox.
                while let Ok(m) = rx.try_recv() {
                    if let crate::worker::Control::Processor(cmd) = m {
                        proc.command(now, cmd);
                    }
                }
                proc.housekeeping(now);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let svc: Service = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            "[[service]]\nprotocol = \"tcp\"\nvip = \"198.18.0.100\"\nport = 80\nscheduler = \"rr\"\n[[service.backend]]\naddress = \"198.19.0.11\"\nmethod = \"dr\"\n",
        )
        .unwrap()
        .services[0]
            .clone();
        workers
            .publish(Published {
                services: vec![svc.clone()],
                marks: vec![],
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let reports = workers.reports();
        assert_eq!(reports[0].services.len(), 1);
        assert_eq!(reports[0].services[0].key, svc.key);
        assert!(workers.connections().unwrap().is_empty());
        // A state the pipeline cannot take is refused, and the old one stays.
        let mut bad = svc.clone();
        bad.scheduler = "nonsense".into();
        let e = workers
            .publish(Published {
                services: vec![bad],
                marks: vec![],
            })
            .unwrap_err();
        assert!(matches!(e, PublishError::Refused(_)), "{e}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().unwrap();
        // With the worker gone (its inbox closed), commands fail instead of hanging.
        let workers = Workers {
            wait: Duration::from_millis(50),
            ..workers
        };
        assert!(workers.connections().is_err());
    }
}
