//! `xvs replay`: run the forwarding pipeline over a capture, offline.
//!
//! Each frame's capture timestamp is `now`; the frame enters on the port of its pcapng
//! interface number; a frame of a pcap (or of pcapng interface 0) enters on the port whose MAC
//! address it is sent to, or on `ingress` when it is sent to none of them. Whatever the
//! pipeline transmits goes to the output pcap with the same timestamp. One line per input
//! frame tells the verdict — `tx PORT` (`tx PORT +N fragments` when it left as 1 + N IPv4
//! fragments, all written to the output), `pass`, `drop REASON`, or `answer REASON PORT` when
//! the frame was dropped for REASON and an ICMP error about it sent out of PORT — and, for
//! frames that reached a service, the service, backend and method; the counters follow.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use xvs_forwarding::service::ServiceKey;
use xvs_forwarding::wire::{parse, Parsed};
use xvs_forwarding::{BackendId, Frame, Method, Pipeline, PipelineConfig, PortId, Time, Verdict};

use crate::capture::{read_capture, CaptureWriter};
use crate::config::Config;

/// Headroom in front of each frame, for encapsulation (as the data plane gives).
pub const HEADROOM: usize = 256;

/// Expiry work between two frames: generous, replay is not a hot path.
const HOUSEKEEPING_BUDGET: u32 = 4096;

pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Nat => "nat",
        Method::Dr => "dr",
        Method::Tunnel => "tun",
        Method::FullNat => "fullnat",
    }
}

/// The configured backend behind a `BackendId` (ids are consecutive over the services'
/// backends in file order).
pub fn backend_addr(cfg: &Config, id: BackendId) -> Option<SocketAddr> {
    let mut i = id.0 as usize;
    for s in &cfg.services {
        if i < s.backends.len() {
            let b = &s.backends[i];
            return Some(SocketAddr::new(b.addr, b.port));
        }
        i -= s.backends.len();
    }
    None
}

pub fn service_name(cfg: &Config, i: usize) -> String {
    match cfg.services.get(i).map(|s| s.key) {
        Some(ServiceKey::Addr { proto, addr, port }) => {
            format!("{} {}", proto_name(proto), SocketAddr::new(addr, port))
        }
        Some(ServiceKey::Fwmark { mark, .. }) => format!("FWM {mark}"),
        None => format!("service#{i}"),
    }
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "TCP",
        17 => "UDP",
        1 => "ICMP",
        58 => "ICMPv6",
        132 => "SCTP",
        _ => "IP",
    }
}

/// Summary of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub frames: u64,
    pub transmitted: u64,
}

/// Build the pipeline a simulation runs: one worker, the file's network.
pub fn offline_pipeline(cfg: &Config) -> Result<Pipeline> {
    build(cfg, cfg.pipeline_config(0, 1))
}

/// The pipeline of a replay: as [`offline_pipeline`], fragmenting too-big IPv4 packets
/// without DF (every fragment goes to the output capture).
pub fn replay_pipeline(cfg: &Config) -> Result<Pipeline> {
    build(
        cfg,
        PipelineConfig {
            fragment: true,
            ..cfg.pipeline_config(0, 1)
        },
    )
}

fn build(cfg: &Config, pc: PipelineConfig) -> Result<Pipeline> {
    Pipeline::new(pc, &cfg.services, cfg.marks.clone(), cfg.network(&[]))
        .with_context(|| format!("{}: cannot build the pipeline", cfg.file.display()))
}

pub fn replay(
    cfg: &Config,
    input: &Path,
    output: &Path,
    ingress: PortId,
    out: &mut dyn Write,
) -> Result<ReplaySummary> {
    let frames = read_capture(input)?;
    let mut pipe = replay_pipeline(cfg)?;
    let mut writer = CaptureWriter::create(output)?;
    let port_name = |p: PortId| {
        cfg.ports
            .get(usize::from(p.0))
            .map_or_else(|| format!("port{}", p.0), |p| p.name.clone())
    };
    let mut summary = ReplaySummary::default();
    let mut buf = vec![0u8; HEADROOM + 65536];
    for (i, f) in frames.iter().enumerate() {
        let now = Time(f.timestamp.as_nanos() as u64);
        let port = if f.interface != 0
            && usize::try_from(f.interface).is_ok_and(|n| n < cfg.ports.len())
        {
            PortId(f.interface as u16)
        } else {
            f.data
                .get(..6)
                .and_then(|dst| cfg.ports.iter().position(|p| p.mac == dst))
                .map_or(ingress, |i| PortId(i as u16))
        };
        pipe.housekeeping(now, HOUSEKEEPING_BUDGET);
        let len = f.data.len().min(65536);
        buf[HEADROOM..HEADROOM + len].copy_from_slice(&f.data[..len]);
        let what = describe(&f.data);
        let mut frame = Frame::new(&mut buf, HEADROOM, len);
        let v = pipe.process(now, port, &mut frame);
        summary.frames += 1;
        let verdict = match v {
            Verdict::Tx(p) => {
                writer.write(f.timestamp, frame.data())?;
                summary.transmitted += 1;
                let mut more = 0;
                let mut err = Ok(());
                pipe.drain_fragments(|_, bytes| {
                    more += 1;
                    if err.is_ok() {
                        err = writer.write(f.timestamp, bytes);
                    }
                });
                err?;
                summary.transmitted += more;
                match (pipe.last_answer(), more) {
                    (Some(r), _) => format!("answer {} {}", r.as_str(), port_name(p)),
                    (None, 0) => format!("tx {}", port_name(p)),
                    (None, n) => format!("tx {} +{n} fragments", port_name(p)),
                }
            }
            Verdict::Pass => "pass".to_string(),
            Verdict::Drop(r) => format!("drop {}", r.as_str()),
        };
        let decision = pipe.last_decision().map_or_else(String::new, |d| {
            let backend = backend_addr(cfg, d.backend)
                .map_or_else(|| format!("#{}", d.backend.0), |a| a.to_string());
            format!(
                "  [{}] -> {} {}{}",
                service_name(cfg, d.service.0 as usize),
                backend,
                method_name(d.method),
                if d.new_conn { " new" } else { "" }
            )
        });
        writeln!(out, "{:>6} {:<24} {}{}", i + 1, verdict, what, decision)?;
    }
    writer.finish()?;
    print_counters(cfg, &pipe, out)?;
    Ok(summary)
}

/// `TCP 198.18.0.1:1234 > 198.18.0.100:80 [S]` for a frame, or what it is instead.
pub fn describe(data: &[u8]) -> String {
    match parse(data) {
        Parsed::NotIp => "non-IP".into(),
        Parsed::Invalid(e) => format!("invalid ({e:?})"),
        Parsed::Ip(p) => {
            let mut s = if p.has_ports() {
                format!(
                    "{} {} > {}",
                    proto_name(p.proto),
                    SocketAddr::new(p.src, p.sport),
                    SocketAddr::new(p.dst, p.dport)
                )
            } else {
                format!("{} {} > {}", proto_name(p.proto), p.src, p.dst)
            };
            if p.proto == 6 && p.has_ports() {
                let f = p.tcp_flags;
                let names = [
                    (0x02, 'S'),
                    (0x10, '.'),
                    (0x01, 'F'),
                    (0x04, 'R'),
                    (0x08, 'P'),
                ];
                let flags: String = names
                    .iter()
                    .filter(|(b, _)| f & b != 0)
                    .map(|(_, c)| *c)
                    .collect();
                s.push_str(&format!(" [{flags}]"));
            }
            if p.icmp_error {
                s.push_str(&format!(" error {}/{}", p.icmp_type, p.icmp_code));
            }
            s
        }
    }
}

pub fn print_counters(cfg: &Config, pipe: &Pipeline, out: &mut dyn Write) -> Result<()> {
    let c = pipe.counters();
    writeln!(
        out,
        "\nframes: rx {} tx {} pass {} drop {} (icmp answers sent {}, rate-limited {})",
        c.rx,
        c.tx,
        c.pass,
        c.drops.total(),
        c.icmp_answers,
        c.icmp_rate_limited
    )?;
    for (r, n) in c.drops.iter() {
        writeln!(out, "  drop {:<20} {n}", r.as_str())?;
    }
    writeln!(out, "connections in table: {}", pipe.connections().len())?;
    let mut id = 0u32;
    for (i, s) in cfg.services.iter().enumerate() {
        let t = pipe.service_traffic()[i];
        writeln!(
            out,
            "{}: conns {} in {} pkts / {} bytes, out {} pkts / {} bytes",
            service_name(cfg, i),
            t.conns,
            t.in_pkts,
            t.in_bytes,
            t.out_pkts,
            t.out_bytes
        )?;
        for b in &s.backends {
            let t = pipe.backend_traffic()[id as usize];
            writeln!(
                out,
                "  -> {:<28} {:<7} conns {} in {} pkts, out {} pkts",
                SocketAddr::new(b.addr, b.port).to_string(),
                method_name(b.method),
                t.conns,
                t.in_pkts,
                t.out_pkts
            )?;
            id += 1;
        }
    }
    Ok(())
}
