//! Instructions per frame of the pipeline, per case: the headline of `cargo bench -p
//! xvs-forwarding` (`cargo bench -p xvs-forwarding --bench instructions`). Instruction counts
//! do not depend on what else runs on the machine, unlike time on the shared VMs.
//!
//! How: the parent re-runs this binary once per case under Valgrind's callgrind
//! (`valgrind --tool=callgrind --toggle-collect=*insn_measured*`), which counts only the
//! instructions executed inside [`insn_measured`] — one `Pipeline::process` call (or one
//! `process_batch` of 32) per frame, not the setup nor the harness's copy of the frame into its
//! buffer — and prints callgrind's `Collected` total ÷ the frames measured. Valgrind is required:
//! without it the bench fails (no fallback to time).
//!
//! Cases (IPv4 TCP, 1 K connections, the same frames as `benches/pipeline.rs`):
//! `established/{nat-in,nat-out,dr,tun,fullnat-in,fullnat-out}` (one client or backend ACK of an
//! established connection, connections in random order), `established-batch/{nat-in,nat-out,dr}` (the same
//! through `process_batch`, per frame) and `new-flow/nat` (a SYN of a new client: parse, lookup
//! miss, scheduling (rr) and insert; steady state with 1 K connections, the expiry work
//! `housekeeping(now, 64)` per frame counted separately as `new-flow/housekeeping`).
//!
//! Last, the connection table's bytes per connection of capacity (entry, index slots, the IPv6
//! slab's and timer heads' share), at 1 Ki and 1 Mi connections.
//!
//! `XVS_INSN_FRAMES` sets the frames per case (default 20000); `XVS_INSN_OUT=DIR` keeps
//! callgrind's output per case in DIR for `callgrind_annotate` instead of discarding it.
//! `XVS_INSN_CONNECTIONS=N` runs the cases with N connections instead of 1000 (the setup then
//! takes minutes under Valgrind at 1 M). `XVS_INSN_CACHE=1` adds callgrind's cache simulation
//! (`--cache-sim=yes`, last level as `XVS_INSN_LL`, default `33554432,16,64`: this machine's
//! 32 MiB L3) and prints, beside the instructions, the simulated L1 data misses and
//! last-level data misses per frame: deterministic, unlike the time they cost.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod scenario;

use std::net::IpAddr;
use std::process::Command;

use common::*;
use scenario::{client, established, pipeline, run_one, HEADROOM};
use xvs_forwarding::pipeline::BATCH;
use xvs_forwarding::{Frame, Method, Pipeline, PortId, Time, Verdict};

const CONNECTIONS: u32 = 1000;
const CASES: [&str; 11] = [
    "established/nat-in",
    "established/nat-out",
    "established/dr",
    "established/tun",
    "established/fullnat-in",
    "established/fullnat-out",
    "established-batch/nat-in",
    "established-batch/nat-out",
    "established-batch/dr",
    "new-flow/nat",
    "new-flow/housekeeping",
];

/// What callgrind counts: the pipeline's work on one frame (or one batch).
#[inline(never)]
fn insn_measured(p: &mut Pipeline, now: Time, port: PortId, f: &mut Frame<'_>) -> Verdict {
    p.process(now, port, f)
}

#[inline(never)]
fn insn_measured_batch(
    p: &mut Pipeline,
    now: Time,
    port: PortId,
    fs: &mut [Frame<'_>],
    v: &mut [Verdict],
) {
    p.process_batch(now, port, fs, v)
}

#[inline(never)]
fn insn_measured_housekeeping(p: &mut Pipeline, now: Time) -> u32 {
    p.housekeeping(now, 64)
}

/// Connections of every case: `XVS_INSN_CONNECTIONS`, else [`CONNECTIONS`].
fn connections() -> u32 {
    std::env::var("XVS_INSN_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CONNECTIONS)
}

/// Run `frames` frames of `case` (the child side, under callgrind).
fn child(case: &str, frames: u64) -> Result<(), String> {
    let now = Time::from_secs(2);
    let mut buf = vec![0u8; HEADROOM + 2048];
    let connections = connections();
    if let Some(rest) = case.strip_prefix("new-flow/") {
        let mut p = pipeline(2 * connections + 4096);
        let step = 60_000_000_000 / u64::from(connections);
        let mut now = Time::from_secs(10);
        let syn = |i: u32| {
            let (c, cport) = client(i);
            frame_in(c, IpAddr::V4(VIP4)).tcp(cport, 80).syn().build()
        };
        let mut next = 0u32;
        for _ in 0..connections {
            now.0 += step;
            p.housekeeping(now, 64);
            run_one(&mut p, now, FRONT, &syn(next), &mut buf);
            next += 1;
        }
        for _ in 0..frames {
            now.0 += step;
            next = next.wrapping_add(1) % (32768 * 64000);
            let f = syn(next);
            if rest == "housekeeping" {
                insn_measured_housekeeping(&mut p, now);
                run_one(&mut p, now, FRONT, &f, &mut buf);
            } else {
                p.housekeeping(now, 64);
                buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(&f);
                let mut fr = Frame::new(&mut buf, HEADROOM, f.len());
                let v = insn_measured(&mut p, now, FRONT, &mut fr);
                if v != Verdict::Tx(BACK) {
                    return Err(format!("{case}: verdict {v:?}"));
                }
            }
        }
        return Ok(());
    }
    let (name, batch) = match case.strip_prefix("established-batch/") {
        Some(n) => (n, true),
        None => (
            case.strip_prefix("established/")
                .ok_or_else(|| format!("unknown case {case}"))?,
            false,
        ),
    };
    let (m, out) = match name {
        "nat-in" => (Method::Nat, false),
        "nat-out" => (Method::Nat, true),
        "dr" => (Method::Dr, false),
        "tun" => (Method::Tunnel, false),
        "fullnat-in" => (Method::FullNat, false),
        "fullnat-out" => (Method::FullNat, true),
        _ => return Err(format!("unknown case {case}")),
    };
    let (mut p, ins, outs) = established(m, connections);
    let (frames_in, port) = if out { (&outs, BACK) } else { (&ins, FRONT) };
    let want = if out {
        Verdict::Tx(FRONT)
    } else {
        Verdict::Tx(BACK)
    };
    let mut i = 0usize;
    if batch {
        let mut bufs = vec![vec![0u8; HEADROOM + 2048]; BATCH];
        let mut verdicts = [Verdict::Pass; BATCH];
        for _ in 0..frames / BATCH as u64 {
            let mut lens = [0usize; BATCH];
            for (b, len) in bufs.iter_mut().zip(lens.iter_mut()) {
                i = (i + 1) % frames_in.len();
                let f = &frames_in[i];
                b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
                *len = f.len();
            }
            let mut it = bufs.iter_mut().zip(lens);
            let mut fs: [Frame; BATCH] = std::array::from_fn(|_| {
                let (b, len) = it.next().expect("BATCH buffers");
                Frame::new(b, HEADROOM, len)
            });
            insn_measured_batch(&mut p, now, port, &mut fs, &mut verdicts);
            if let Some(v) = verdicts.iter().find(|v| **v != want) {
                return Err(format!("{case}: verdict {v:?}"));
            }
        }
    } else {
        for _ in 0..frames {
            i = (i + 1) % frames_in.len();
            let f = &frames_in[i];
            buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
            let mut fr = Frame::new(&mut buf, HEADROOM, f.len());
            let v = insn_measured(&mut p, now, port, &mut fr);
            if v != want {
                return Err(format!("{case}: verdict {v:?}"));
            }
        }
    }
    Ok(())
}

/// Per frame: instructions and, with the cache simulation, L1 and last-level data misses.
struct Counts {
    instructions: f64,
    misses: Option<(f64, f64)>,
}

/// Run `case` under callgrind and return its counts per frame.
fn measure(case: &str, frames: u64, cache: Option<&str>) -> Result<Counts, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out_file = match std::env::var_os("XVS_INSN_OUT") {
        Some(d) => format!(
            "{}/callgrind.{}.out",
            std::path::Path::new(&d).display(),
            case.replace('/', "-")
        ),
        None => "/dev/null".into(),
    };
    let toggle = if case.starts_with("established-batch/") {
        "*insn_measured_batch*"
    } else if case == "new-flow/housekeeping" {
        "*insn_measured_housekeeping*"
    } else {
        "*insn_measured*"
    };
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--tool=callgrind",
        &format!("--toggle-collect={toggle}"),
        &format!("--callgrind-out-file={out_file}"),
    ]);
    if let Some(ll) = cache {
        cmd.args(["--cache-sim=yes", &format!("--LL={ll}")]);
    }
    let o = cmd
        .arg(&exe)
        .env("XVS_INSN_CASE", case)
        .env("XVS_INSN_FRAMES", frames.to_string())
        .output()
        .map_err(|e| format!("valgrind: {e} (install valgrind: scripts/install-deps.sh)"))?;
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(format!("{case}: valgrind exited {}: {err}", o.status));
    }
    // "==PID== Collected : Ir" or, with the cache simulation,
    // "==PID== Collected : Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw"
    let collected: Vec<u64> = err
        .lines()
        .find_map(|l| l.split_once("Collected :").map(|(_, n)| n.to_string()))
        .map(|n| {
            n.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .ok_or_else(|| format!("{case}: no 'Collected' line in valgrind's output: {err}"))?;
    let per = |x: u64| x as f64 / frames as f64;
    // Callgrind leaves out trailing counts that are 0.
    let mut collected = collected;
    if cache.is_some() && !collected.is_empty() && collected.len() < 9 {
        collected.resize(9, 0);
    }
    let misses = match (cache, collected.as_slice()) {
        (None, [_]) => None,
        (Some(_), [_, _, _, _, d1r, d1w, _, dlr, dlw]) => Some((per(d1r + d1w), per(dlr + dlw))),
        _ => {
            return Err(format!(
                "{case}: unexpected 'Collected' counts {collected:?} in valgrind's output"
            ))
        }
    };
    match collected.first() {
        Some(&ir) if ir > 0 => Ok(Counts {
            instructions: per(ir),
            misses,
        }),
        _ => Err(format!(
            "{case}: callgrind counted nothing in {toggle} (symbol not found?)"
        )),
    }
}

fn main() {
    let frames: u64 = std::env::var("XVS_INSN_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    if let Ok(case) = std::env::var("XVS_INSN_CASE") {
        if let Err(e) = child(&case, frames) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench -- FILTER` passes FILTER (and `--bench`); run the cases containing it.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let cache = std::env::var("XVS_INSN_CACHE")
        .is_ok_and(|v| v == "1")
        .then(|| std::env::var("XVS_INSN_LL").unwrap_or_else(|_| "33554432,16,64".into()));
    let connections = connections();
    println!(
        "instructions per frame (callgrind, {frames} frames per case, {connections} IPv4 TCP connections)"
    );
    if let Some(ll) = &cache {
        println!("cache simulation, last level {ll}: instructions, L1 data misses, LL data misses");
    }
    let mut failed = false;
    for case in CASES {
        if filter.as_deref().is_some_and(|f| !case.contains(f)) {
            continue;
        }
        match measure(case, frames, cache.as_deref()) {
            Ok(Counts {
                instructions,
                misses: None,
            }) => println!("{case:<28} {instructions:>8.1}"),
            Ok(Counts {
                instructions,
                misses: Some((d1, ll)),
            }) => println!("{case:<28} {instructions:>8.1} {d1:>8.2} {ll:>8.2}"),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if filter.is_none() {
        // Memory: allocated per entry of capacity (entry, index slots, IPv6 slab share, heads).
        for cap in [1u32 << 10, 1 << 20] {
            let p = pipeline(cap);
            println!(
                "bytes per connection, capacity {cap}: {}",
                p.connections().bytes_per_entry()
            );
        }
    }
    if failed {
        std::process::exit(1);
    }
}
