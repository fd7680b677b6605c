//! The `xvs` command: `run` the director, `replay` a capture through the pipeline offline,
//! `check` a configuration.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xvs::config::Config;
use xvs::dataplane_config::IoKind;
use xvs::worker::{run_director, DirectorTargets};
use xvs_forwarding::service::ServiceKey;
use xvs_forwarding::{Method, Pipeline, PortId};

#[derive(Parser)]
#[command(
    name = "xvs",
    version,
    about = "LVS-style L4 director in userspace on AF_XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the director on the configured interfaces until SIGINT or SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// I/O backend: afxdp (default) or packet (AF_PACKET). Overrides the file.
        #[arg(long)]
        io: Option<IoKind>,
    },
    /// Run the forwarding pipeline over a pcap/pcapng capture and write what it would send.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// Input capture (pcap or pcapng, Ethernet).
        #[arg(long = "in")]
        input: PathBuf,
        /// Output capture (pcap) of the frames the director would transmit.
        #[arg(long = "out")]
        output: PathBuf,
        /// Interface the frames of a pcap (or pcapng interface 0) arrive on.
        #[arg(long, default_value_t = 0)]
        ingress: u16,
    },
    /// Print the backend each flow gets, through the same pipeline the data plane runs.
    Simulate {
        #[arg(long, short)]
        config: PathBuf,
        /// Flow list (`proto src_ip src_port dst_ip dst_port [open|close]` per line, `-` for
        /// standard input) or a pcap/pcapng capture.
        #[arg(long)]
        flows: PathBuf,
    },
    /// Validate a configuration file and print a summary.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xvs: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, io } => run(config, io),
        Command::Replay {
            config,
            input,
            output,
            ingress,
        } => {
            let cfg = Config::load(&config)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            xvs::replay::replay(&cfg, &input, &output, PortId(ingress), &mut out)?;
            out.flush()?;
            Ok(())
        }
        Command::Simulate { config, flows } => {
            let cfg = Config::load(&config)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let is_capture = std::fs::read(&flows)
                .map(|b| b.len() >= 4 && is_capture_magic(&b[..4]))
                .unwrap_or(false);
            if is_capture {
                xvs::simulate::simulate_capture(&cfg, &flows, &mut out)?;
            } else {
                let text = if flows.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&flows)
                        .with_context(|| format!("{}: cannot read", flows.display()))?
                };
                let list = xvs::simulate::parse_flows(&text)
                    .with_context(|| flows.display().to_string())?;
                xvs::simulate::simulate_flows(&cfg, &list, &mut out)?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            xvs::replay::offline_pipeline(&cfg)?;
            println!(
                "{}: ok: {} interface(s), {} service(s), {} backend(s), {} worker(s), io {}",
                cfg.file.display(),
                cfg.ports.len(),
                cfg.services.len(),
                cfg.services.iter().map(|s| s.backends.len()).sum::<usize>(),
                cfg.dataplane.workers.len(),
                cfg.dataplane.io
            );
            Ok(())
        }
    }
}

/// pcap (either byte order, µs or ns) or pcapng.
fn is_capture_magic(m: &[u8]) -> bool {
    matches!(
        m,
        [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x0a, 0x0d, 0x0d, 0x0a]
    )
}

/// What the XDP program must steer to the workers, from the configuration.
fn targets(cfg: &Config) -> DirectorTargets {
    let mut t = DirectorTargets::default();
    let add = |v: &mut Vec<IpAddr>, a: IpAddr| {
        if !v.contains(&a) {
            v.push(a);
        }
    };
    for s in &cfg.services {
        if let ServiceKey::Addr { addr, .. } = s.key {
            add(&mut t.vips, addr);
        }
        for b in &s.backends {
            if matches!(b.method, Method::Nat | Method::FullNat) {
                add(&mut t.backends, b.addr);
            }
            add(&mut t.next_hops, b.addr);
        }
    }
    for m in &cfg.marks {
        let host = if m.dst.is_ipv4() { 32 } else { 128 };
        if m.dst_prefix_len == host {
            add(&mut t.vips, m.dst);
        }
    }
    for &a in &cfg.local_addresses {
        add(&mut t.locals, a);
    }
    for r in &cfg.routes {
        if let Some(gw) = r.via {
            add(&mut t.next_hops, gw);
        }
    }
    t
}

fn run(config: PathBuf, io: Option<IoKind>) -> Result<()> {
    let cfg = Config::load(&config)?;
    let mut dp = cfg.dataplane.clone();
    if let Some(io) = io {
        dp.io = io;
    }
    if dp.interfaces.is_empty() {
        anyhow::bail!("{}: no [[interface]] to run on", cfg.file.display());
    }
    // Everything that can fail in building a pipeline fails here, before the data plane starts.
    xvs::replay::offline_pipeline(&cfg)?;
    let workers = dp.workers.len() as u16;
    let targets = targets(&cfg);
    let stats = run_director(&dp, &targets, |worker, ports| {
        let macs: Vec<[u8; 6]> = ports.iter().map(|p| p.mac).collect();
        Pipeline::new(
            cfg.pipeline_config(worker as u16, workers),
            &cfg.services,
            cfg.marks.clone(),
            cfg.network(&macs),
        )
        .expect("the same configuration built a pipeline before the data plane started")
    })
    .context("data plane")?;
    for s in stats {
        eprintln!("xvs: worker {}: {:?}", s.worker, s);
    }
    Ok(())
}
