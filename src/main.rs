//! The `xvs` command: `run` the director, `replay` a capture through the pipeline offline,
//! `check` a configuration, `import` keepalived's.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xvs::config::Config;
use xvs::dataplane_config::IoKind;
use xvs_forwarding::PortId;

/// The connection tables' big arrays on transparent huge pages where the kernel gives them
/// (see `xvs::io::hugepages`).
#[global_allocator]
static ALLOC: xvs::io::hugepages::HugePageAlloc = xvs::io::hugepages::HugePageAlloc;

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
        /// Control socket for `xvs ctl` (created mode 0600).
        #[arg(long, default_value = xvs::control::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Take over from the director running with this control socket: its AF_XDP sockets,
        /// UMEM, XDP program and connection tables are handed over, then it exits (hitless
        /// restart or upgrade; needs the same interfaces, workers and steering).
        #[arg(long, value_name = "SOCKET")]
        takeover: Option<PathBuf>,
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
        /// Workers to simulate: frames go to the worker the data plane's steering gives them,
        /// one at a time in trace order, through one pipeline per worker sharing one state.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: u16,
    },
    /// Validate a configuration file and print a summary.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Translate keepalived's LVS configuration (keepalived.conf) into xvs's TOML. Every setting
    /// without an xvs equivalent is reported (stderr) with its file and line. Exit status: 0 all
    /// translated, 3 written with settings reported untranslated, 2 keepalived.conf does not parse
    /// (nothing written), 1 other errors.
    Import {
        /// keepalived's configuration file (its `include`s are followed).
        keepalived_conf: PathBuf,
        /// Write the TOML here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// keepalived's config id for `@ID` lines (keepalived -i); default the host name.
        #[arg(long)]
        config_id: Option<String>,
        /// Also write the report to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Manage the running director with ipvsadm's commands (`xvs ctl -Ln`, `xvs ctl -h`).
    #[command(disable_help_flag = true)]
    Ctl {
        /// The control socket of `xvs run`.
        #[arg(long, default_value = xvs::control::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// ipvsadm arguments (`-A -t 198.18.0.100:80 -s rr`, `-Ln --stats`, `reload`, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("{}xvs: {e:#}", xvs::systemd::prefix(tracing::Level::ERROR));
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    // Structured log lines (health transitions, metrics, control) on stderr; in the journal's
    // conventions (`<N>` priority, no timestamp) when stderr is the journal.
    if xvs::systemd::journal_stderr() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .event_format(xvs::systemd::JournalFormat::default())
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .init();
    }
    match cli.command {
        Command::Ctl { socket, args } => {
            std::process::exit(xvs::control::server::client(&socket, &args))
        }
        Command::Import {
            keepalived_conf,
            out,
            config_id,
            report,
        } => std::process::exit(import(&keepalived_conf, out, config_id, report)),
        Command::Run {
            config,
            io,
            socket,
            takeover,
        } => xvs::director::run(&config, io, &socket, takeover.as_deref()),
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
        Command::Simulate {
            config,
            flows,
            workers,
        } => {
            let cfg = Config::load(&config)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let is_capture = std::fs::read(&flows)
                .map(|b| b.len() >= 4 && is_capture_magic(&b[..4]))
                .unwrap_or(false);
            if is_capture {
                xvs::simulate::simulate_capture(&cfg, &flows, workers, &mut out)?;
            } else {
                let text = if flows.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&flows)
                        .with_context(|| format!("{}: cannot read", flows.display()))?
                };
                let list = xvs::simulate::parse_flows(&text)
                    .with_context(|| flows.display().to_string())?;
                xvs::simulate::simulate_flows(&cfg, &list, workers, &mut out)?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            xvs::replay::offline_pipeline(&cfg)?;
            println!(
                "{}: ok: {} interface(s), {} service(s), {} backend(s), {} dns name(s), {} redirect listener(s), {} worker(s), io {}",
                cfg.file.display(),
                cfg.ports.len(),
                cfg.services.len(),
                cfg.services.iter().map(|s| s.backends.len()).sum::<usize>(),
                cfg.dns.iter().map(|d| d.names.len()).sum::<usize>(),
                cfg.redirects.len(),
                cfg.dataplane.workers.len(),
                cfg.dataplane.io
            );
            Ok(())
        }
    }
}

/// `xvs import`: the exit status (see `xvs::import::EXIT_*`).
fn import(
    input: &std::path::Path,
    out: Option<PathBuf>,
    config_id: Option<String>,
    report: Option<PathBuf>,
) -> i32 {
    use xvs::import::{ImportOptions, EXIT_ERROR};
    let opts = ImportOptions {
        config_id,
        out_name: out.clone(),
    };
    let done = match xvs::import::import_file(input, &opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("xvs import: {}", error_chain(&e));
            return e.exit_code();
        }
    };
    let text = done.report_text();
    eprint!("{text}");
    if let Some(path) = report {
        if let Err(e) = std::fs::write(&path, &text) {
            eprintln!("xvs import: {}: cannot write: {e}", path.display());
            return EXIT_ERROR;
        }
    }
    match out {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, &done.toml) {
                eprintln!("xvs import: {}: cannot write: {e}", path.display());
                return EXIT_ERROR;
            }
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            if lock
                .write_all(done.toml.as_bytes())
                .and_then(|_| lock.flush())
                .is_err()
            {
                return EXIT_ERROR;
            }
        }
    }
    done.exit_code()
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
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
