//! Results of `xvs-bench run`: JSON for machines, a markdown table (date and machine in its
//! header) that replaces the table of README.md's `## Results` section, and an SVG plot
//! (plotters, SVG backend) of ns/frame and delivered pps per target. Ratios are computed within
//! one run, against (a) the bare AF_XDP bounce, (c) kernel forwarding and (d) nftables DNAT, on
//! the 64-byte UDP traffic; the goals are printed beside them, never asserted.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::targets::Target;

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetResult {
    pub target: String,
    pub kind: String,
    pub traffic: String,
    pub secs: f64,
    pub sent: u64,
    pub delivered: u64,
    pub sent_pps: f64,
    pub delivered_pps: f64,
    pub loss: f64,
    /// CPU time per delivered frame.
    pub ns_per_pkt: Option<f64>,
    pub cpu_source: String,
    /// Frames the worker received (in-process targets).
    pub worker_rx: Option<u64>,
    pub per_backend: Vec<u64>,
    pub latency: Option<Latency>,
    pub conns_per_s: Option<f64>,
    /// Softirq time of the worker core during the run (all targets).
    pub softirq_ns: u64,
    /// All non-idle time of the worker core during the run (user, system, irq, softirq).
    pub core_ns: u64,
    /// Share of the worker threads' CPU time spent in user space (the rest: system calls and
    /// the kernel work they trigger), from /proc ticks.
    pub worker_user_share: Option<f64>,
    /// The worker threads' CPU time during the run (bounce and xvs).
    pub worker_cpu_ns: Option<u64>,
    /// xvs's own busy accounting (wall time of polls that received frames) per delivered frame.
    pub busy_ns_per_pkt: Option<f64>,
    /// Round of the interleaved run (0-based) this result belongs to.
    pub round: u32,
    /// The worker threads' user and system time during the run (/proc ticks, 10 ms) per
    /// delivered frame (bounce and xvs).
    pub user_ns_per_pkt: Option<f64>,
    pub sys_ns_per_pkt: Option<f64>,
    /// System calls of the worker's I/O over the target's life (xvs's own counters:
    /// sendto, recvfrom, poll), and their sum per frame the worker received.
    pub syscalls: Vec<(String, u64)>,
    pub syscalls_per_frame: Option<f64>,
    /// Frames per receive batch (rx / rx batches) and frames per TX kick (tx / sendto), from
    /// the same counters.
    pub frames_per_batch: Option<f64>,
    pub frames_per_kick: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TargetResult {
    /// Everything the worker core did during the run, per delivered frame.
    pub fn core_ns_per_pkt(&self) -> Option<f64> {
        (self.delivered > 0 && self.core_ns > 0)
            .then(|| self.core_ns as f64 / self.delivered as f64)
    }

    pub fn failed(t: &Target, traffic: &str, e: String) -> TargetResult {
        TargetResult {
            target: t.name(),
            kind: t.kind().into(),
            traffic: traffic.into(),
            secs: 0.0,
            sent: 0,
            delivered: 0,
            sent_pps: 0.0,
            delivered_pps: 0.0,
            loss: 1.0,
            ns_per_pkt: None,
            cpu_source: String::new(),
            worker_rx: None,
            per_backend: vec![],
            latency: None,
            conns_per_s: None,
            softirq_ns: 0,
            core_ns: 0,
            worker_user_share: None,
            worker_cpu_ns: None,
            busy_ns_per_pkt: None,
            round: 0,
            user_ns_per_pkt: None,
            sys_ns_per_pkt: None,
            syscalls: vec![],
            syscalls_per_frame: None,
            frames_per_batch: None,
            frames_per_kick: None,
            error: Some(e),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    pub connections: u32,
    pub syns_sent: u64,
    pub syns_delivered: u64,
    pub table_capacity: u32,
    pub vmhwm_before_kib: u64,
    pub vmhwm_kib: u64,
    /// Connections the director held after the flood (`xvs ctl -Ln`), if it answered.
    pub held: Option<u64>,
    /// Flood rounds it took (SYNs lost at the director are resent from new sources).
    pub rounds: u32,
}

/// A ratio over the rounds of a run: each round's ratio is taken within that round (the xvs
/// target and its baseline measured minutes apart at most), then median, min and max.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
}

impl Spread {
    /// Median (mean of the middle two for an even count), min and max; `None` when empty.
    pub fn of(mut v: Vec<f64>) -> Option<Spread> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            rounds: n,
        })
    }

    fn show(s: Option<Spread>) -> String {
        match s {
            None => "–".into(),
            Some(s) if s.rounds == 1 => format!("{:.2}", s.median),
            Some(s) => format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub target: String,
    /// xvs ns/frame ÷ bounce ns/frame (goal ≤ 1.1), over the rounds.
    pub cost_vs_bounce: Option<Spread>,
    /// kernel forwarding ÷ xvs, ns/frame (CPU): frames per core relative (goal ≥ 1.5).
    pub per_core_vs_kernel: Option<Spread>,
    /// nftables ÷ xvs, ns/frame (CPU) (goal ≥ 2).
    pub per_core_vs_nft: Option<Spread>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: String,
    pub mode: String,
    /// The command line of the run.
    pub command: String,
    pub secs_per_target: f64,
    pub flows: u32,
    pub results: Vec<TargetResult>,
    pub ratios: Vec<Ratio>,
    pub memory: Vec<MemoryResult>,
    pub goals: Vec<String>,
    pub notes: Vec<String>,
    pub wall_secs: f64,
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Report {
    pub fn new(
        mode: &str,
        secs: f64,
        flows: u32,
        results: Vec<TargetResult>,
        memory: Vec<MemoryResult>,
        wall: f64,
    ) -> Report {
        // Each ratio within its round, then median / min / max over the rounds.
        let find = |name: &str, round: u32| {
            results
                .iter()
                .find(|r| r.target == name && r.traffic == "udp64" && r.round == round)
                .and_then(|r| r.ns_per_pkt)
                .filter(|v| *v > 0.0)
        };
        let mut names: Vec<&str> = Vec::new();
        for r in &results {
            if r.kind == "xvs" && r.traffic == "udp64" && !names.contains(&r.target.as_str()) {
                names.push(&r.target);
            }
        }
        let ratios = names
            .iter()
            .map(|name| {
                let (mut vb, mut vk, mut vn) = (vec![], vec![], vec![]);
                for r in results
                    .iter()
                    .filter(|r| r.target == *name && r.traffic == "udp64")
                {
                    let Some(x) = r.ns_per_pkt.filter(|v| *v > 0.0) else {
                        continue;
                    };
                    vb.extend(find("bounce", r.round).map(|b| x / b));
                    vk.extend(find("kernel-fwd", r.round).map(|k| k / x));
                    vn.extend(find("nft-dnat", r.round).map(|n| n / x));
                }
                Ratio {
                    target: name.to_string(),
                    cost_vs_bounce: Spread::of(vb),
                    per_core_vs_kernel: Spread::of(vk),
                    per_core_vs_nft: Spread::of(vn),
                }
            })
            .collect();
        let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
        Report {
            date: sh("date -u '+%Y-%m-%d %H:%M UTC'"),
            machine: format!(
                "Linux {}, {} vCPU ({}), {} GiB",
                sh("uname -r"),
                sh("nproc"),
                cpu.trim(),
                sh("awk '/MemTotal/ {printf \"%d\", $2/1048576}' /proc/meminfo")
            ),
            mode: mode.into(),
            command: if mode == "quick" {
                "xvs-bench run --quick".into()
            } else {
                "xvs-bench run".into()
            },
            secs_per_target: secs,
            flows,
            results,
            ratios,
            memory,
            goals: vec![
                "xvs worker cost ≤ 1.1 × the bare AF_XDP bounce".into(),
                "≥ 1.5 × kernel IPv4 forwarding per core".into(),
                "≥ 2 × nftables DNAT per core".into(),
                "100 % decision parity with IPVS (xvs-bench parity)".into(),
            ],
            notes: vec![
                "kernel IPVS: not in this host's kernel (no CONFIG_IP_VS); decisions are compared in a QEMU guest by `xvs-bench parity`, whose timings are emulated and excluded from every ratio".into(),
                "ns/frame (CPU): xvs and bounce = the pinned worker thread's CPU clock (user + system, incl. its TX syscalls) per delivered frame; kernel baselines = softirq time of the same core (/proc/stat, 10 ms ticks; RPS steers the director's receive work there) per delivered frame, which also carries the egress bridge and the sink's drop. 'core softirq' is that softirq figure for every target (for xvs: the egress veth/bridge/sink work its TX triggers, plus whatever else ran there)".into(),
                "whole core ns/frame: all non-idle time (user, system, irq, softirq) of the worker core per delivered frame — the same accounting for every target, but it also carries anything else that ran on that core (a shared VM), so the ratios use ns/frame (CPU)".into(),
                "worker user %: the share of the worker thread's CPU spent in user space (xvs's own per-frame work); the rest is system calls and the kernel's copy-mode AF_XDP / veth / bridge path they drive, which dominates on veth".into(),
                "pps: on this 2-vCPU VM the generator's core and the worker's core both run near 100 % (compare whole core ns/frame × delivered pps), so pps is the testbed's limit and ns/frame the cost".into(),
                "nftables DNAT under the SYN flood and the pcap replay: conntrack drops most frames (table full / mid-stream TCP out of window), so its ns/frame there is CPU per frame that got through".into(),
                "latency: one-way, send → sink socket, sampled 1 in N frames at full load, so it is mostly queueing".into(),
            ],
            wall_secs: wall,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>, d: usize| v.map_or("–".to_string(), |v| format!("{v:.d$}"));
        let mut s = format!(
            "Run of {} ({} mode, {:.1} s per target, {} flows), on {}. Command: `{}`.\n\n",
            self.date, self.mode, self.secs_per_target, self.flows, self.machine, self.command
        );
        s += "| target | traffic | round | sent pps | delivered pps | loss | ns/frame (CPU) | worker user % | user ns/frame | system ns/frame | syscalls/frame | frames/rx batch | frames/kick | core softirq ns/frame | whole core ns/frame | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | TCP conn/s |\n";
        s += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for r in &self.results {
            let l = r.latency.as_ref();
            s += &format!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.1} % | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.target,
                r.traffic,
                r.round + 1,
                r.sent_pps,
                r.delivered_pps,
                100.0 * r.loss,
                f(r.ns_per_pkt, 0),
                f(r.worker_user_share.map(|x| 100.0 * x), 0),
                f(r.user_ns_per_pkt, 0),
                f(r.sys_ns_per_pkt, 0),
                f(r.syscalls_per_frame, 3),
                f(r.frames_per_batch, 1),
                f(r.frames_per_kick, 1),
                f(
                    (r.delivered > 0).then(|| r.softirq_ns as f64 / r.delivered as f64),
                    0
                ),
                f(r.core_ns_per_pkt(), 0),
                f(l.map(|l| l.p50_us), 0),
                f(l.map(|l| l.p90_us), 0),
                f(l.map(|l| l.p99_us), 0),
                f(l.map(|l| l.p999_us), 0),
                f(l.map(|l| l.max_us), 0),
                f(r.conns_per_s, 0),
            );
        }
        s += "\nRatios (64-byte UDP; goals in brackets, not asserted), each taken within one round of the interleaved run, then the median (min–max) over the rounds. All on ns/frame (CPU): cost ÷ bounce = xvs ÷ bounce; per core = the baseline's ÷ xvs's (frames per core relative to it):\n\n";
        s += "| xvs target | cost ÷ bounce [≤ 1.1] | per core vs kernel fwd [≥ 1.5] | per core vs nft DNAT [≥ 2] |\n|---|---:|---:|---:|\n";
        for r in &self.ratios {
            s += &format!(
                "| {} | {} | {} | {} |\n",
                r.target,
                Spread::show(r.cost_vs_bounce),
                Spread::show(r.per_core_vs_kernel),
                Spread::show(r.per_core_vs_nft)
            );
        }
        if !self.memory.is_empty() {
            s += "\nPeak memory of `xvs run` (VmHWM) with connections opened by a SYN flood from distinct sources (the table is allocated for its capacity, `[director] connections`, at start):\n\n| connections | SYNs sent (rounds) | SYNs delivered | held (xvs ctl -Ln) | table capacity | VmHWM before flood | VmHWM after |\n|---:|---:|---:|---:|---:|---:|---:|\n";
            for m in &self.memory {
                s += &format!(
                    "| {} | {} ({}) | {} | {} | {} | {} MiB | {} MiB |\n",
                    m.connections,
                    m.syns_sent,
                    m.rounds,
                    m.syns_delivered,
                    m.held.map_or("–".to_string(), |h| h.to_string()),
                    m.table_capacity,
                    m.vmhwm_before_kib / 1024,
                    m.vmhwm_kib / 1024
                );
            }
        }
        s += "\nNotes:\n";
        for n in &self.notes {
            s += &format!("- {n}\n");
        }
        s
    }

    /// Horizontal bars: ns/frame (left) and delivered kpps (right) per target, 64-byte UDP.
    pub fn svg(&self, path: &Path) -> Result<(), String> {
        let rows: Vec<&TargetResult> = self
            .results
            .iter()
            .filter(|r| r.traffic == "udp64")
            .collect();
        let n = rows.len().max(1);
        let h = 80 + 22 * n as u32;
        let root = SVGBackend::new(path, (1000, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(560);
        let max_ns = rows.iter().filter_map(|r| r.ns_per_pkt).fold(1.0, f64::max) * 1.1;
        let max_k = rows
            .iter()
            .map(|r| r.delivered_pps / 1e3)
            .fold(1.0, f64::max)
            * 1.1;
        for (area, title, max, val) in [
            (
                &left,
                "CPU ns per forwarded frame (lower is better)",
                max_ns,
                &(|r: &TargetResult| r.ns_per_pkt.unwrap_or(0.0)) as &dyn Fn(&TargetResult) -> f64,
            ),
            (
                &right,
                "delivered kpps (generator-bound)",
                max_k,
                &(|r: &TargetResult| r.delivered_pps / 1e3) as &dyn Fn(&TargetResult) -> f64,
            ),
        ] {
            let labels: Vec<String> = rows.iter().map(|r| r.target.clone()).collect();
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(if std::ptr::eq(area, &left) { 130 } else { 10 })
                .build_cartesian_2d(0.0..max, (0..n).into_segmented())
                .map_err(|e| e.to_string())?;
            let show_labels = std::ptr::eq(area, &left);
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(n)
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) if show_labels => {
                        labels.get(*i).cloned().unwrap_or_default()
                    }
                    _ => String::new(),
                })
                .draw()
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(rows.iter().enumerate().map(|(i, r)| {
                    let color = match r.kind.as_str() {
                        "bounce" => RGBColor(120, 120, 120),
                        "xvs" => RGBColor(31, 119, 180),
                        "kernel" => RGBColor(214, 39, 40),
                        _ => RGBColor(255, 127, 14),
                    };
                    Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(i)),
                            (val(r), SegmentValue::Exact(i + 1)),
                        ],
                        color.filled(),
                    )
                }))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    }
}

/// How to run the harness, written above the table.
const HOWTO: &str = "Needs root and the testbed's tools (scripts/install-deps.sh). Full mode \
(`cargo build --release -p xvs -p xvs-bench && target/release/xvs-bench run --out bench/results \
--readme README.md`, about 15 minutes) builds a namespace testbed (scripts/testbed.sh), \
pins one xvs worker to CPU 0 and the AF_XDP generator to CPU 1, and sends the same traffic through \
every target: the bare AF_XDP bounce, xvs NAT/DR/TUN/FullNAT × rr/wlc/mh, kernel IPv4 forwarding and \
nftables `numgen` DNAT — 64-byte UDP over 1000 flows for all, IMIX, SYN flood and the demo pcap \
replayed for the bounce, xvs NAT rr and the kernel baselines — in interleaved rounds (`--rounds`, \
default 3: every target once per round, the order rotated by one each round; each ratio is taken \
within a round, then shown as median (min–max)); then TCP connection churn (real \
sockets, HTTP/1.0 GET) and the peak memory of `xvs run` holding 1 M and 10 M SYN-flood connections. \
Per target it also shows the worker's user and system ns per frame (/proc ticks) and its system \
calls (sendto/recvfrom/poll, xvs's own counters) per frame received, with the frames per receive \
batch (rx ÷ batches handed to the processor) and per TX kick (tx ÷ sendto) from the same counters; \
the bounce runs on the same worker loop and rings as xvs, only its processor differs. The header \
line of each run below names the command that produced it. \
JSON, markdown and SVG go to `--out` (default `target/xvs-bench/`). `--quick` (under 60 s: bounce, the four \
methods with rr, both kernel baselines, 1 s each, 64-byte UDP only, one round) is what `tests/bench_quick.rs` \
runs; `--targets`, `--traffic`, `--secs`, `--flows`, `--memory`, `--pcap FILE` narrow or widen a run \
(`xvs-bench run --help`). Kernel IPVS is not in this host's kernel; `xvs-bench parity` compares \
decisions in a QEMU guest (timings there are emulated and appear in no ratio).\n\n";

/// Replace the table of README's `## Results` section with `table`, keeping the lead's
/// micro-benchmark rows under a "### Micro-benchmarks" sub-heading (moved there if they were
/// the section's table). Everything outside the section is unchanged.
pub fn write_readme(readme: &str, table: &str, plot: &str) -> String {
    let start = match readme.find("\n## Results") {
        Some(i) => i + 1,
        None => {
            return format!(
                "{}\n## Results\n\n{}\n![ns per frame and pps per target]({plot})\n",
                readme.trim_end(),
                table
            )
        }
    };
    let after = &readme[start..];
    let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
    let end = after[body_start..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + body_start + i + 1);
    let section = &readme[start + body_start..end];
    // The lead's micro-benchmarks: an existing sub-section, or the old section's own content.
    let micro = if let Some(i) = section.find("### Micro-benchmarks") {
        let rest = &section[i..];
        let stop = rest[1..].find("\n### ").map_or(rest.len(), |j| j + 1);
        rest[..stop].trim_end().to_string()
    } else {
        let old = section.trim();
        if old.is_empty() {
            String::new()
        } else {
            format!("### Micro-benchmarks\n\n{old}")
        }
    };
    // The previous run's table and notes ("Run of …" up to its plot), kept under "Earlier
    // end-to-end runs" (newest first) so the trend stays visible.
    let mut earlier = String::new();
    if let Some(i) = section.find("### End to end") {
        let rest = &section[i..];
        let stop = rest[1..].find("\n### ").map_or(rest.len(), |j| j + 1);
        let e2e = &rest[..stop];
        if let Some(r) = e2e.find("Run of ") {
            let run = &e2e[r..];
            let run = run.find("\n![").map_or(run, |k| &run[..k]);
            earlier += run.trim_end();
            earlier += "\n\n";
        }
    }
    if let Some(i) = section.find("### Earlier end-to-end runs") {
        let rest = &section[i..];
        let stop = rest[1..].find("\n### ").map_or(rest.len(), |j| j + 1);
        let body = rest[..stop]
            .trim_start_matches("### Earlier end-to-end runs")
            .trim();
        if !body.is_empty() {
            earlier += body;
            earlier += "\n\n";
        }
    }
    let mut out = String::new();
    out += &readme[..start];
    out += "## Results\n\n";
    out += "### End to end (xvs-bench run)\n\n";
    out += HOWTO;
    out += table.trim_end();
    out += &format!("\n\n![CPU ns per frame and delivered pps per target]({plot})\n\n");
    if !earlier.is_empty() {
        out += "### Earlier end-to-end runs\n\n";
        out += earlier.trim_end();
        out += "\n\n";
    }
    if !micro.is_empty() {
        out += &micro;
        out += "\n\n";
    }
    out += &readme[end..];
    if end == readme.len() {
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(target: &str, kind: &str, ns: f64) -> TargetResult {
        TargetResult {
            target: target.into(),
            kind: kind.into(),
            traffic: "udp64".into(),
            secs: 1.0,
            sent: 100,
            delivered: 90,
            sent_pps: 100.0,
            delivered_pps: 90.0,
            loss: 0.1,
            ns_per_pkt: Some(ns),
            core_ns: (ns * 90.0) as u64,
            worker_user_share: None,
            cpu_source: String::new(),
            worker_rx: None,
            per_backend: vec![90],
            latency: None,
            conns_per_s: None,
            softirq_ns: 0,
            worker_cpu_ns: None,
            busy_ns_per_pkt: None,
            round: 0,
            user_ns_per_pkt: None,
            sys_ns_per_pkt: None,
            syscalls: vec![],
            syscalls_per_frame: None,
            frames_per_batch: None,
            frames_per_kick: None,
            error: None,
        }
    }

    #[test]
    fn ratios_are_computed_within_the_run() {
        let r = Report::new(
            "quick",
            1.0,
            10,
            vec![
                result("bounce", "bounce", 100.0),
                result("xvs-nat-rr", "xvs", 110.0),
                result("kernel-fwd", "kernel", 330.0),
                result("nft-dnat", "nft", 550.0),
            ],
            vec![],
            1.0,
        );
        assert_eq!(r.ratios.len(), 1);
        let x = &r.ratios[0];
        assert!((x.cost_vs_bounce.unwrap().median - 1.1).abs() < 1e-9);
        assert!((x.per_core_vs_kernel.unwrap().median - 3.0).abs() < 1e-9);
        assert!((x.per_core_vs_nft.unwrap().median - 5.0).abs() < 1e-9);
        let md = r.markdown();
        assert!(md.contains("| xvs-nat-rr | udp64 |"));
        assert!(md.contains("| xvs-nat-rr | 1.10 | 3.00 | 5.00 |"));
    }

    #[test]
    fn ratios_pair_results_of_the_same_round_and_spread_over_rounds() {
        let at = |t: &str, k: &str, ns: f64, round: u32| TargetResult {
            round,
            ..result(t, k, ns)
        };
        let r = Report::new(
            "full",
            1.0,
            10,
            vec![
                at("bounce", "bounce", 100.0, 0),
                at("xvs-nat-rr", "xvs", 110.0, 0),
                at("xvs-nat-rr", "xvs", 300.0, 1),
                at("bounce", "bounce", 200.0, 1),
                at("bounce", "bounce", 100.0, 2),
                at("xvs-nat-rr", "xvs", 130.0, 2),
            ],
            vec![],
            1.0,
        );
        let s = r.ratios[0].cost_vs_bounce.unwrap();
        assert_eq!(s.rounds, 3);
        assert!((s.median - 1.3).abs() < 1e-9, "{s:?}");
        assert!(
            (s.min - 1.1).abs() < 1e-9 && (s.max - 1.5).abs() < 1e-9,
            "{s:?}"
        );
        assert!(r.markdown().contains("| xvs-nat-rr | 1.30 (1.10–1.50) |"));
        assert_eq!(Spread::of(vec![]), None);
        assert_eq!(Spread::of(vec![2.0, 1.0]).unwrap().median, 1.5);
    }

    #[test]
    fn readme_section_is_replaced_and_micro_benchmarks_kept() {
        let readme = "# xvs\n\nintro\n\n## Results\n\n| bench | ns |\n|---|---|\n| parse | 4 |\n\n## Next\n\ntail\n";
        let out = write_readme(readme, "TABLE1", "bench/results/plot.svg");
        assert!(out.starts_with("# xvs\n\nintro\n\n## Results\n"));
        assert!(out.contains("TABLE1"));
        assert!(out.contains("### Micro-benchmarks\n\n| bench | ns |\n|---|---|\n| parse | 4 |"));
        assert!(out.ends_with("## Next\n\ntail\n"));
        // Idempotent apart from the table: a second run replaces TABLE1 and keeps one micro table.
        let again = write_readme(&out, "TABLE2", "bench/results/plot.svg");
        assert!(!again.contains("TABLE1") && again.contains("TABLE2"));
        assert_eq!(again.matches("### Micro-benchmarks").count(), 1);
        assert_eq!(again.matches("| parse | 4 |").count(), 1);
        // Earlier runs stay visible, newest first.
        let t1 = "Run of day 1.\n\n| a | 1 |";
        let t2 = "Run of day 2.\n\n| a | 2 |";
        let t3 = "Run of day 3.\n\n| a | 3 |";
        let r1 = write_readme(readme, t1, "p.svg");
        let r2 = write_readme(&r1, t2, "p.svg");
        let r3 = write_readme(&r2, t3, "p.svg");
        let (head, old) = r3
            .split_once("### Earlier end-to-end runs")
            .expect("earlier runs");
        assert!(head.contains("| a | 3 |") && !head.contains("| a | 2 |"));
        let (i2, i1) = (
            old.find("| a | 2 |").unwrap(),
            old.find("| a | 1 |").unwrap(),
        );
        assert!(i2 < i1 && !old.contains("| a | 3 |"));
        assert_eq!(r3.matches("| a | 1 |").count(), 1);
        assert_eq!(r3.matches("| parse | 4 |").count(), 1);
        assert!(r3.ends_with("## Next\n\ntail\n"));
        // No section: appended.
        let none = write_readme("# x\n", "T", "p.svg");
        assert!(none.contains("## Results\n\nT"));
    }

    #[test]
    fn svg_is_written() {
        let r = Report::new(
            "quick",
            1.0,
            10,
            vec![
                result("bounce", "bounce", 100.0),
                result("nft-dnat", "nft", 300.0),
            ],
            vec![],
            1.0,
        );
        let p = std::env::temp_dir().join(format!("xvs-bench-test-{}.svg", std::process::id()));
        r.svg(&p).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert!(s.contains("<svg") && s.contains("nft-dnat"));
    }
}
