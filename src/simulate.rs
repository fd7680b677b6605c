//! `xvs simulate`: which backend each flow gets, through the exact code the data plane runs.
//!
//! Input is a configuration and a list of flows, either text lines
//! `proto src_ip src_port dst_ip dst_port [open|close]` (`#` starts a comment) or a capture.
//! Each text line becomes frames sent through one worker's `Pipeline`, one millisecond apart:
//! * TCP `open` (the default): the client's SYN, the backend's SYN-ACK (seen only where replies
//!   pass the director: NAT, FullNAT) and the client's ACK — the connection is ESTABLISHED and
//!   counts as active, as a real handshake through IPVS would leave it;
//! * TCP `close`: the client's FIN, the backend's FIN (NAT, FullNAT) and the client's last ACK —
//!   the connection leaves ESTABLISHED and counts as inactive until it expires;
//! * UDP: one datagram, for `open` and `close` alike (UDP entries have no teardown; they expire).
//!
//! so least-connection traces (lc, wlc, sed, nq) see the counts rise and fall as in the kernel.
//! A line `ctl ARGS…` runs an `xvs ctl` command against the simulated director between two
//! flows (`ctl -e -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 0`, `ctl -d …`, `ctl -Ln
//! --stats`), through the same code as on a running director: changes reach the pipeline as a
//! reload does (scheduler callbacks, draining), and the command's output joins the trace.
//! A capture is replayed frame by frame with its own timestamps, and each frame that opens a
//! connection is reported.
//!
//! `--workers N` runs N pipelines built on one shared state (connection counts, schedulers) as
//! `xvs run` does with N workers, and gives every frame, in trace order, to the worker the data
//! plane's steering (`worker::steer::owner`, with the `[steering]` client steering chosen at
//! start) makes its owner; a frame no rule claims goes to worker 0. Before each frame every
//! worker expires what is due, so connections end in time order across workers. The decisions
//! are then those of N workers for this order of new connections — the same as one kernel's.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context, Result};
use etherparse::PacketBuilder;
use std::sync::{Arc, Mutex};
use xvs_forwarding::conn::Direction;

use xvs_forwarding::conn::ConnListing;
use xvs_forwarding::pipeline::Shared;
use xvs_forwarding::service::ServiceKey;
use xvs_forwarding::{BackendId, Decision, Frame, Method, Pipeline, PortId, Time, Verdict};

use crate::capture::read_capture;
use crate::config::Config;
use crate::control::model::Listing;
use crate::control::server::{execute, Director};
use crate::control::state::DesiredState;
use crate::director::targets;
use crate::replay::{method_name, HEADROOM};
use crate::worker::steer::{owner, SteerSets};
use crate::worker::ClientSteering;

/// One line of a flow list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLine {
    pub proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub close: bool,
}

/// One line of a flow list: a flow, or an `xvs ctl` command applied between flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Flow(FlowLine),
    /// `ctl ARGS…`: ipvsadm's arguments, as `xvs ctl` takes them (`ctl -e -t … -w 0`,
    /// `ctl -Ln`); its output goes into the trace.
    Ctl(Vec<String>),
}

/// Parse a flow list; errors name the line.
pub fn parse_flows(text: &str) -> Result<Vec<Line>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f[0] == "ctl" {
            out.push(Line::Ctl(f[1..].iter().map(|a| a.to_string()).collect()));
            continue;
        }
        let at = || format!("line {}: {line:?}", n + 1);
        if !(5..=6).contains(&f.len()) {
            bail!(
                "{}: expected `proto src_ip src_port dst_ip dst_port [open|close]`",
                at()
            );
        }
        let proto = match f[0].to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            other => bail!("{}: protocol {other:?} is not tcp or udp", at()),
        };
        let addr = |s: &str| s.parse::<IpAddr>().with_context(at);
        let port = |s: &str| s.parse::<u16>().with_context(at);
        let src = SocketAddr::new(addr(f[1])?, port(f[2])?);
        let dst = SocketAddr::new(addr(f[3])?, port(f[4])?);
        if src.is_ipv4() != dst.is_ipv4() {
            bail!("{}: source and destination families differ", at());
        }
        let close = match f.get(5).copied() {
            None | Some("open") => false,
            Some("close") => true,
            Some(other) => bail!("{}: {other:?} is not open or close", at()),
        };
        out.push(Line::Flow(FlowLine {
            proto,
            src,
            dst,
            close,
        }));
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Tcp {
    Syn,
    SynAck,
    Ack,
    FinAck,
}

/// An Ethernet frame from `src` to `dst` (cold path; etherparse's builder).
fn frame(proto: u8, src: SocketAddr, dst: SocketAddr, tcp: Tcp) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xfe], [2, 0, 0, 0, 0, 1]);
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("families checked when parsing"),
    };
    let mut out = Vec::new();
    let payload: &[u8] = &[];
    let written = if proto == 17 {
        ip.udp(src.port(), dst.port()).write(&mut out, b"simulate")
    } else {
        let t = ip.tcp(src.port(), dst.port(), 1, 65535);
        let t = match tcp {
            Tcp::Syn => t.syn(),
            Tcp::SynAck => t.syn().ack(2),
            Tcp::Ack => t.ack(2),
            Tcp::FinAck => t.fin().ack(2),
        };
        t.write(&mut out, payload)
    };
    written.expect("writing to a Vec cannot fail");
    out
}

/// The workers' pipelines driven by a flow list, behind the same `Director` interface the
/// control socket uses, so `ctl` lines act exactly as `xvs ctl` does on a running director.
struct Sim {
    cfg: Config,
    shared: Arc<Shared>,
    pipes: Mutex<Vec<Pipeline>>,
    /// The steering sets of the current state (client steering fixed at start).
    sets: Mutex<Arc<SteerSets>>,
    steering: ClientSteering,
    desired: Mutex<DesiredState>,
    now: Mutex<Time>,
    /// New connections each worker made.
    opened: Mutex<Vec<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sim {
    fn new(cfg: &Config, workers: u16, now: Time) -> Result<Sim> {
        let workers = workers.max(1);
        let built = |e: xvs_forwarding::pipeline::BuildError| {
            anyhow::anyhow!("{}: cannot build the pipeline: {e}", cfg.file.display())
        };
        let shared = Arc::new(
            Pipeline::shared_for(&cfg.pipeline_config(0, workers), &cfg.services).map_err(built)?,
        );
        shared
            .apply(&cfg.services, cfg.marks.clone())
            .map_err(built)?;
        let pipes = (0..workers)
            .map(|w| {
                Pipeline::with_shared(
                    cfg.pipeline_config(w, workers),
                    shared.clone(),
                    cfg.network(&[]),
                )
            })
            .collect();
        let t = targets(cfg, &cfg.services);
        Ok(Sim {
            shared,
            pipes: Mutex::new(pipes),
            sets: Mutex::new(Arc::new(SteerSets::new(&t))),
            steering: t.client_steering,
            desired: Mutex::new(DesiredState::from_config(cfg)),
            now: Mutex::new(now),
            opened: Mutex::new(vec![0; usize::from(workers)]),
            cfg: cfg.clone(),
        })
    }

    /// Send a frame to its owner's pipeline (after every worker's expiry up to now).
    fn send(&self, buf: &mut [u8], data: &[u8], ingress: PortId) -> (Verdict, Option<Decision>) {
        let len = data.len().min(buf.len() - HEADROOM);
        buf[HEADROOM..HEADROOM + len].copy_from_slice(&data[..len]);
        let now = *lock(&self.now);
        let mut pipes = lock(&self.pipes);
        let n = pipes.len();
        let w = owner(&buf[HEADROOM..HEADROOM + len], &lock(&self.sets), n).unwrap_or(0);
        for p in pipes.iter_mut() {
            p.housekeeping(now, 4096);
        }
        let w = w.min(n - 1);
        let pipe = &mut pipes[w];
        let mut f = Frame::new(buf, HEADROOM, len);
        let v = pipe.process(now, ingress, &mut f);
        let d = pipe.last_decision();
        if d.is_some_and(|d| d.new_conn) {
            lock(&self.opened)[w] += 1;
        }
        (v, d)
    }

    /// With several workers: a comment line per worker with the connections it opened.
    fn trailer(&self, out: &mut dyn Write) -> Result<()> {
        let opened = lock(&self.opened);
        if opened.len() > 1 {
            for (w, n) in opened.iter().enumerate() {
                writeln!(out, "# worker {w}: {n} new connection(s)")?;
            }
        }
        Ok(())
    }

    fn backend(&self, id: BackendId) -> String {
        lock(&self.pipes)[0]
            .backend_endpoint(id)
            .map_or_else(|| "?".into(), |(a, p)| SocketAddr::new(a, p).to_string())
    }

    /// "address=active/inactive" of every backend of the decision's service, oldest first
    /// (the director's counts, shared by all workers).
    fn counts(&self, d: &Decision) -> String {
        let Some(key) = lock(&self.pipes)[0].service_key(d.service) else {
            return String::new();
        };
        let report = self.shared.report();
        let Some(s) = report.iter().find(|s| s.key == key) else {
            return String::new();
        };
        s.backends
            .iter()
            .rev()
            .map(|b| {
                format!(
                    "{}={}/{}",
                    SocketAddr::new(b.addr, b.port),
                    b.active,
                    b.inactive
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A connection of client `src` to `dst` in any worker's table: its backend and FullNAT
    /// local address.
    fn find(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<(SocketAddr, Option<(IpAddr, u16)>)> {
        let now = *lock(&self.now);
        let pipes = lock(&self.pipes);
        pipes.iter().find_map(|pipe| {
            let c = pipe
                .connections()
                .list(now)
                .find(|l| !l.template && l.client == src && l.virt == dst)?;
            Some((
                c.backend,
                pipe.connections().get(c.id).and_then(|e| e.local),
            ))
        })
    }
}

impl Director for Sim {
    fn desired(&self) -> DesiredState {
        lock(&self.desired).clone()
    }

    fn apply(&self, new: DesiredState) -> Result<(), String> {
        let (snap, _) = self
            .shared
            .apply(&new.services, self.cfg.marks.clone())
            .map_err(|e| e.to_string())?;
        let t = new.timeouts;
        for pipe in lock(&self.pipes).iter_mut() {
            pipe.install(snap.clone());
            pipe.set_timeouts(t.tcp, t.tcpfin, t.udp);
        }
        let mut targets = targets(&self.cfg, &new.services);
        targets.client_steering = self.steering;
        *lock(&self.sets) = Arc::new(SteerSets::new(&targets));
        *lock(&self.desired) = new;
        Ok(())
    }

    fn listing(&self) -> Listing {
        let mut l = Listing::from_state(&lock(&self.desired));
        for pipe in lock(&self.pipes).iter() {
            l.add_report(&pipe.report());
        }
        l.set_counts(&self.shared.report());
        l
    }

    fn connections(&self) -> Vec<ConnListing> {
        let now = *lock(&self.now);
        lock(&self.pipes)
            .iter()
            .flat_map(|p| p.connections().list(now).collect::<Vec<_>>())
            .collect()
    }

    fn zero(&self, service: Option<ServiceKey>) {
        for pipe in lock(&self.pipes).iter_mut() {
            pipe.zero_traffic(service.as_ref());
        }
    }

    fn file_state(&self) -> DesiredState {
        DesiredState::from_config(&self.cfg)
    }

    fn reload(&self) -> Result<DesiredState, String> {
        Err("reload: not in a simulation (edit the configuration and run again)".into())
    }

    fn status(&self) -> String {
        let pipes = lock(&self.pipes);
        let n: u32 = pipes.iter().map(|p| p.connections().len()).sum();
        format!(
            "simulate: {n} connection(s) in the table(s) of {} worker(s)",
            pipes.len()
        )
    }

    /// A simulation opens no sockets: the daemons are only recorded (as on a 1500-byte MTU).
    fn daemons(&self) -> Vec<(crate::sync::DaemonConfig, u16)> {
        lock(&self.desired)
            .daemons
            .iter()
            .map(|d| (d.clone(), d.effective_maxlen(1500)))
            .collect()
    }
}

/// Run a text flow list; one output line per flow, and the output of each `ctl` line.
pub fn simulate_flows(
    cfg: &Config,
    lines: &[Line],
    workers: u16,
    out: &mut dyn Write,
) -> Result<()> {
    let sim = Sim::new(cfg, workers, Time::from_secs(1))?;
    let mut buf = vec![0u8; HEADROOM + 2048];
    writeln!(
        out,
        "# flow => backend method  [active/inactive per backend of the service]"
    )?;
    for (i, line) in lines.iter().enumerate() {
        {
            let mut now = lock(&sim.now);
            *now = Time(now.0 + 1_000_000);
        }
        let fl = match line {
            Line::Flow(fl) => fl,
            Line::Ctl(args) => {
                let r = execute(&sim, args, "");
                writeln!(out, "{:>5} ctl {}", i + 1, args.join(" "))?;
                for l in r.stdout.lines().chain(r.stderr.lines()) {
                    writeln!(out, "      | {l}")?;
                }
                if r.status != 0 {
                    bail!(
                        "line {}: ctl {}: {}",
                        i + 1,
                        args.join(" "),
                        r.stderr.trim()
                    );
                }
                continue;
            }
        };
        let what = format!(
            "{:>5} {} {} > {} {}",
            i + 1,
            if fl.proto == 6 { "TCP" } else { "UDP" },
            fl.src,
            fl.dst,
            if fl.close { "close" } else { "open" }
        );
        let first = if fl.proto == 17 {
            frame(17, fl.src, fl.dst, Tcp::Syn)
        } else if fl.close {
            frame(6, fl.src, fl.dst, Tcp::FinAck)
        } else {
            frame(6, fl.src, fl.dst, Tcp::Syn)
        };
        let (v, d) = sim.send(&mut buf, &first, PortId(0));
        let Some(d) = d.filter(|d| d.direction == Direction::In) else {
            let why = match v {
                Verdict::Pass => "no service".to_string(),
                Verdict::Drop(r) => format!("dropped: {}", r.as_str()),
                Verdict::Tx(_) => "answered by the director (no backend)".to_string(),
            };
            writeln!(out, "{what} => {why}")?;
            continue;
        };
        if fl.proto == 6 {
            // The backend's half, where it passes the director, then the client's ACK.
            if let Some((backend, local)) = sim.find(fl.src, fl.dst) {
                if matches!(d.method, Method::Nat | Method::FullNat) {
                    let reply_to = match d.method {
                        Method::FullNat => local.map(|(a, p)| SocketAddr::new(a, p)),
                        _ => Some(fl.src),
                    };
                    if let Some(to) = reply_to {
                        let kind = if fl.close { Tcp::FinAck } else { Tcp::SynAck };
                        sim.send(&mut buf, &frame(6, backend, to, kind), PortId(1));
                    }
                }
                sim.send(&mut buf, &frame(6, fl.src, fl.dst, Tcp::Ack), PortId(0));
            }
        }
        writeln!(
            out,
            "{what} => {} {}{}  [{}]",
            sim.backend(d.backend),
            method_name(d.method),
            if d.new_conn { "" } else { " (existing)" },
            sim.counts(&d)
        )?;
    }
    sim.trailer(out)
}

/// Replay a capture and report the backend of every connection it opens.
pub fn simulate_capture(
    cfg: &Config,
    path: &Path,
    workers: u16,
    out: &mut dyn Write,
) -> Result<()> {
    let frames = read_capture(path)?;
    let sim = Sim::new(cfg, workers, Time(0))?;
    let mut buf = vec![0u8; HEADROOM + 65536];
    for (i, f) in frames.iter().enumerate() {
        *lock(&sim.now) = Time(f.timestamp.as_nanos() as u64);
        let (_, d) = sim.send(&mut buf, &f.data, PortId(0));
        if let Some(d) = d.filter(|d| d.new_conn) {
            writeln!(
                out,
                "{:>6} {} => {} {}  [{}]",
                i + 1,
                crate::replay::describe(&f.data),
                sim.backend(d.backend),
                method_name(d.method),
                sim.counts(&d)
            )?;
        }
    }
    sim.trailer(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_lines_parse_and_errors_name_the_line() {
        let f = parse_flows(
            "# comment\ntcp 198.18.0.1 1000 198.18.0.100 80\nudp 2001:2::1 53 2001:2::100 53 close\n",
        )
        .unwrap();
        let flows: Vec<&FlowLine> = f
            .iter()
            .filter_map(|l| match l {
                Line::Flow(f) => Some(f),
                Line::Ctl(_) => None,
            })
            .collect();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].proto, 6);
        assert!(!flows[0].close);
        assert!(flows[1].close);
        let c = parse_flows("ctl -e -t 198.18.0.100:80 -r 198.19.0.11:8080 -m -w 0\n").unwrap();
        assert_eq!(
            c[0],
            Line::Ctl(vec![
                "-e".into(),
                "-t".into(),
                "198.18.0.100:80".into(),
                "-r".into(),
                "198.19.0.11:8080".into(),
                "-m".into(),
                "-w".into(),
                "0".into()
            ])
        );
        let e = parse_flows("tcp 1.2.3.4 1 5.6.7.8\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 1:"), "{e}");
        let e = parse_flows("\n\nicmp 1.2.3.4 1 5.6.7.8 9\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 3:"), "{e}");
        let e = parse_flows("tcp 1.2.3.4 1 ::1 9\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("families"), "{e}");
    }
}
