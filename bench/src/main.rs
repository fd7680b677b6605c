//! `xvs-bench`: the benchmark harness of issue 6. `xvs-bench run`: see `run.rs`.
//!
//! `xvs-bench parity [--xvs PATH] [--work DIR] [--flows N] [--json FILE]`: decision parity between
//! `xvs simulate` and kernel IPVS in a QEMU guest (see `parity.rs` and scripts/ipvs-guest/).
//! Exits 1 when a scheduler's share of identical decisions is below 100 %.

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

fn usage() -> ExitCode {
    eprintln!("usage: xvs-bench parity [--xvs PATH] [--work DIR] [--flows N] [--json FILE]");
    eprintln!("       xvs-bench run [--quick] [--targets T,..] [--traffic P,..] [--out DIR] [--readme FILE] ...");
    eprintln!("       xvs-bench flood [--secs S] [--connections N] [--rate PPS] [--clients K]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("run") {
        return run::main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("flood") {
        return flood::main(&args[1..]);
    }
    if args.first().map(String::as_str) != Some("parity") {
        return usage();
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("xvs")));
    let mut opts = parity::Options {
        xvs: sibling.unwrap_or_else(|| PathBuf::from("xvs")),
        guest_script: repo.join("scripts/ipvs-guest/run.sh"),
        work: repo.join("target/ipvs-guest/parity"),
        flows: 60,
        workers: vec![1, 2],
    };
    let mut json: Option<PathBuf> = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let Some(v) = it.next() else { return usage() };
        match a.as_str() {
            "--xvs" => opts.xvs = PathBuf::from(v),
            "--work" => opts.work = PathBuf::from(v),
            "--json" => json = Some(PathBuf::from(v)),
            "--flows" => match v.parse() {
                Ok(n) => opts.flows = n,
                Err(_) => return usage(),
            },
            _ => return usage(),
        }
    }
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
