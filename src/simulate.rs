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
//! A capture is replayed frame by frame with its own timestamps, and each frame that opens a
//! connection is reported.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context, Result};
use etherparse::PacketBuilder;
use xvs_forwarding::conn::Direction;
use xvs_forwarding::{Frame, Method, Pipeline, PortId, Time, Verdict};
use xvs_schedulers::Load;

use crate::capture::read_capture;
use crate::config::Config;
use crate::replay::{backend_addr, method_name, offline_pipeline, HEADROOM};

/// One line of a flow list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLine {
    pub proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub close: bool,
}

/// Parse a flow list; errors name the line.
pub fn parse_flows(text: &str) -> Result<Vec<FlowLine>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
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
        out.push(FlowLine {
            proto,
            src,
            dst,
            close,
        });
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

struct Sim<'a> {
    cfg: &'a Config,
    pipe: Pipeline,
    buf: Vec<u8>,
    now: Time,
}

impl Sim<'_> {
    fn send(&mut self, data: &[u8], ingress: PortId) -> Verdict {
        let len = data.len().min(self.buf.len() - HEADROOM);
        self.buf[HEADROOM..HEADROOM + len].copy_from_slice(&data[..len]);
        let mut f = Frame::new(&mut self.buf, HEADROOM, len);
        self.pipe.housekeeping(self.now, 4096);
        self.pipe.process(self.now, ingress, &mut f)
    }

    /// "active/inactive" of every backend of service `svc`.
    fn counts(&self, svc: usize) -> String {
        let first: usize = self.cfg.services[..svc]
            .iter()
            .map(|s| s.backends.len())
            .sum();
        let load = self.pipe.connections().counts();
        (0..self.cfg.services[svc].backends.len())
            .map(|i| {
                let id = xvs_forwarding::BackendId((first + i) as u32);
                let a = backend_addr(self.cfg, id).map_or_else(String::new, |a| a.to_string());
                format!("{a}={}/{}", load.active(id), load.inactive(id))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Run a text flow list; one output line per flow.
pub fn simulate_flows(cfg: &Config, flows: &[FlowLine], out: &mut dyn Write) -> Result<()> {
    let mut sim = Sim {
        cfg,
        pipe: offline_pipeline(cfg)?,
        buf: vec![0u8; HEADROOM + 2048],
        now: Time::from_secs(1),
    };
    writeln!(
        out,
        "# flow => backend method  [active/inactive per backend of the service]"
    )?;
    for (i, fl) in flows.iter().enumerate() {
        sim.now = Time(sim.now.0 + 1_000_000);
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
        let v = sim.send(&first, PortId(0));
        let Some(d) = sim
            .pipe
            .last_decision()
            .filter(|d| d.direction == Direction::In)
        else {
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
            let conn = sim
                .pipe
                .connections()
                .list(sim.now)
                .find(|l| !l.template && l.client == fl.src && l.virt == fl.dst);
            if let Some(c) = conn {
                if matches!(d.method, Method::Nat | Method::FullNat) {
                    let reply_to = match d.method {
                        Method::FullNat => sim
                            .pipe
                            .connections()
                            .get(c.id)
                            .and_then(|e| e.local)
                            .map(|(a, p)| SocketAddr::new(a, p)),
                        _ => Some(fl.src),
                    };
                    if let Some(to) = reply_to {
                        let kind = if fl.close { Tcp::FinAck } else { Tcp::SynAck };
                        let reply = frame(6, c.backend, to, kind);
                        sim.send(&reply, PortId(1));
                    }
                }
                sim.send(&frame(6, fl.src, fl.dst, Tcp::Ack), PortId(0));
            }
        }
        let backend = backend_addr(cfg, d.backend).map_or_else(|| "?".into(), |a| a.to_string());
        writeln!(
            out,
            "{what} => {backend} {}{}  [{}]",
            method_name(d.method),
            if d.new_conn { "" } else { " (existing)" },
            sim.counts(d.service.0 as usize)
        )?;
    }
    Ok(())
}

/// Replay a capture and report the backend of every connection it opens.
pub fn simulate_capture(cfg: &Config, path: &Path, out: &mut dyn Write) -> Result<()> {
    let frames = read_capture(path)?;
    let mut sim = Sim {
        cfg,
        pipe: offline_pipeline(cfg)?,
        buf: vec![0u8; HEADROOM + 65536],
        now: Time(0),
    };
    for (i, f) in frames.iter().enumerate() {
        sim.now = Time(f.timestamp.as_nanos() as u64);
        sim.send(&f.data, PortId(0));
        if let Some(d) = sim.pipe.last_decision().filter(|d| d.new_conn) {
            let backend =
                backend_addr(cfg, d.backend).map_or_else(|| "?".into(), |a| a.to_string());
            writeln!(
                out,
                "{:>6} {} => {backend} {}  [{}]",
                i + 1,
                crate::replay::describe(&f.data),
                method_name(d.method),
                sim.counts(d.service.0 as usize)
            )?;
        }
    }
    Ok(())
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
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].proto, 6);
        assert!(!f[0].close);
        assert!(f[1].close);
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
