//! `xvs-bench`: the benchmark harness of issue 6 (command line through clap, as `xvs`).
//! `xvs-bench run`: see `run.rs`.
//!
//! `xvs-bench parity [--xvs PATH] [--work DIR] [--flows N] [--json FILE]`: decision parity between
//! `xvs simulate` and kernel IPVS in a QEMU guest (see `parity.rs` and scripts/ipvs-guest/).
//! Exits 1 when a scheduler's share of identical decisions is below 100 %.
//!
//! `xvs-bench flood [--secs S] [--connections N] [--rate PPS] [--clients K]`: SYN flood +
//! legitimate clients against each SYN defence (see `flood.rs`).

#![forbid(unsafe_code)]

mod flood;
mod gen;
mod parity;
mod report;
mod run;
mod sink;
mod targets;
mod traffic;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmark harness of xvs: end-to-end runs against baselines, decision parity with kernel IPVS.
#[derive(Parser, Debug)]
#[command(name = "xvs-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Traffic through xvs and the baselines in a namespace testbed (needs root).
    Run(run::RunArgs),
    /// Decision parity between `xvs simulate` and kernel IPVS in a QEMU guest.
    Parity(ParityArgs),
    /// SYN flood + legitimate clients against each SYN defence (needs root).
    Flood(flood::FloodArgs),
}

#[derive(clap::Args, Debug)]
struct ParityArgs {
    /// The xvs binary (default: beside xvs-bench).
    #[arg(long, value_name = "PATH")]
    xvs: Option<PathBuf>,
    /// Working directory of the guest runs (default target/ipvs-guest/parity).
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// Flows per scenario.
    #[arg(long, default_value_t = 60, value_name = "N")]
    flows: usize,
    /// Every scenario runs through `xvs simulate --workers W` for each of these.
    #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = clap::value_parser!(u16).range(1..), value_name = "W,..")]
    workers: Vec<u16>,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Run(args) => run::main(args),
        Cmd::Parity(args) => parity_main(args),
        Cmd::Flood(args) => flood::main(args),
    }
}

fn parity_main(args: ParityArgs) -> ExitCode {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("xvs")));
    let opts = parity::Options {
        xvs: args
            .xvs
            .unwrap_or_else(|| sibling.unwrap_or_else(|| PathBuf::from("xvs"))),
        guest_script: repo.join("scripts/ipvs-guest/run.sh"),
        work: args
            .work
            .unwrap_or_else(|| repo.join("target/ipvs-guest/parity")),
        flows: args.flows,
        workers: args.workers,
    };
    let json = args.json;
    match parity::run(&opts) {
        Ok(report) => {
            print!("{}", report.render());
            if let Some(path) = &json {
                if let Err(e) = std::fs::write(path, report.to_json()) {
                    eprintln!("xvs-bench parity: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            println!("(files in {})", opts.work.display());
            if report.outcomes.iter().all(|o| o.same == o.flows) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("xvs-bench parity: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_and_parity_arguments_parse_and_bad_ones_are_refused() {
        let cli = Cli::try_parse_from([
            "xvs-bench",
            "run",
            "--quick",
            "--targets",
            "bounce,xvs-nat-rr",
            "--memory",
            "none",
            "--secs",
            "0.5",
            "--rounds",
            "2",
        ])
        .unwrap();
        assert!(matches!(cli.command, Cmd::Run(_)));
        let cli = Cli::try_parse_from(["xvs-bench", "parity", "--flows", "10"]).unwrap();
        match cli.command {
            Cmd::Parity(p) => assert_eq!((p.flows, p.workers), (10, vec![1, 2])),
            _ => panic!("parity"),
        }
        let cli = Cli::try_parse_from(["xvs-bench", "parity", "--workers", "4"]).unwrap();
        match cli.command {
            Cmd::Parity(p) => assert_eq!(p.workers, [4]),
            _ => panic!("parity"),
        }
        for bad in [
            &["xvs-bench", "run", "--targets", "xvs-nat-nosuch,foo"][..],
            &["xvs-bench", "run", "--secs", "0"],
            &["xvs-bench", "run", "--flows", "0"],
            &["xvs-bench", "run", "--rounds", "0"],
            &["xvs-bench", "run", "--memory", "12,x"],
            &["xvs-bench", "run", "--bogus"],
            &["xvs-bench", "parity", "--flows", "x"],
            &["xvs-bench", "parity", "--workers", "0"],
            &["xvs-bench"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
