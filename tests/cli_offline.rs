//! The offline commands of the real binary: `xvs replay` on the shipped demo capture and
//! `xvs simulate` on flow lists, and `xvs check` on good and bad configurations.

use std::path::{Path, PathBuf};
use std::process::Command;

use xvs::capture::read_capture;
use xvs_forwarding::testkit::verify_checksums;

fn xvs(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run xvs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn demo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/xvs.toml")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xvs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn replay_of_the_demo_capture() {
    let out_pcap = tmp("demo-out.pcap");
    let (ok, stdout, stderr) = xvs(&[
        "replay",
        "--config",
        "examples/demo/xvs.toml",
        "--in",
        "examples/demo/capture.pcap",
        "--out",
        out_pcap.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let verdict = |i: usize| lines[i - 1].split_whitespace().nth(1).unwrap().to_string();
    // wrr 1:2:3 built backend by backend: the first round serves each once (.13 .12 .11).
    for (i, b) in [
        (1, "198.19.0.13:8080"),
        (2, "198.19.0.12:8080"),
        (3, "198.19.0.11:8080"),
    ] {
        assert!(
            lines[i - 1].contains(&format!("-> {b} nat new")),
            "{}",
            lines[i - 1]
        );
    }
    assert!(
        lines[6].contains("tx front") && lines[6].contains("nat"),
        "{}",
        lines[6]
    );
    assert!(lines[9].contains("dr new"), "{}", lines[9]);
    assert!(lines[10].contains("tun new"), "{}", lines[10]);
    assert!(lines[11].contains("fullnat new"), "{}", lines[11]);
    assert!(lines[12].contains("tx front"), "{}", lines[12]);
    assert_eq!(verdict(15), "pass");
    assert_eq!(verdict(16), "pass");
    assert!(lines[16].contains("drop no_connection"), "{}", lines[16]);
    // TTL 1 toward a service: dropped, and time exceeded sent back from the VIP.
    assert!(
        lines[17].contains("answer ttl_exceeded front"),
        "{}",
        lines[17]
    );
    assert!(
        stdout.contains("frames: rx 18 tx 14 pass 2 drop 2 (icmp answers sent 1, rate-limited 0)"),
        "{stdout}"
    );
    let frames = read_capture(&out_pcap).unwrap();
    assert_eq!(frames.len(), 15);
    for f in &frames {
        verify_checksums(&f.data).unwrap();
    }
}

#[test]
fn simulate_follows_connection_counts() {
    let cfg = tmp("wlc.toml");
    let text = std::fs::read_to_string(demo_config()).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("scheduler = \"wrr\"", "scheduler = \"wlc\"", 1),
    )
    .unwrap();
    let flows = tmp("flows.txt");
    std::fs::write(
        &flows,
        "tcp 198.18.100.5 1000 198.18.0.100 80\n\
         tcp 198.18.100.5 1001 198.18.0.100 80\n\
         tcp 198.18.100.5 1002 198.18.0.100 80\n\
         tcp 198.18.100.5 1000 198.18.0.100 80 close\n\
         tcp 198.18.100.5 1003 198.18.0.100 80\n\
         tcp 198.18.100.5 1004 198.18.0.100 9999\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = xvs(&[
        "simulate",
        "--config",
        cfg.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let picks: Vec<&str> = stdout
        .lines()
        .skip(1)
        .map(|l| {
            l.split("=> ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
        })
        .collect();
    // wlc over .13(w3) .12(w2) .11(w1) in list order: each gets one active connection; after the
    // close .13 holds only an inactive one (overhead 1 vs 256) and wins again.
    assert_eq!(
        picks,
        [
            "198.19.0.13:8080",
            "198.19.0.12:8080",
            "198.19.0.11:8080",
            "198.19.0.13:8080",
            "198.19.0.13:8080",
            "no"
        ]
    );
    assert!(
        stdout
            .lines()
            .nth(4)
            .unwrap()
            .contains("198.19.0.13:8080=0/1"),
        "{stdout}"
    );
}

#[test]
fn check_reports_config_errors_with_file_and_field() {
    let (ok, stdout, _) = xvs(&["check", "--config", "examples/demo/xvs.toml"]);
    assert!(ok);
    assert!(stdout.contains("5 service(s), 7 backend(s)"), "{stdout}");
    let bad = tmp("bad.toml");
    let text = std::fs::read_to_string(demo_config()).unwrap();
    std::fs::write(&bad, text.replacen("weight = 2", "weight = -2", 1)).unwrap();
    let (ok, _, stderr) = xvs(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("weight"),
        "{stderr}"
    );
    // An adaptive policy is checked too.
    let adaptive = tmp("adaptive.toml");
    std::fs::write(
        &adaptive,
        text.replacen(
            "[[service.backend]]",
            "[service.adaptive]\nreference_ms = 50\ndamping = 1.5\n\n[[service.backend]]",
            1,
        ),
    )
    .unwrap();
    let (ok, _, stderr) = xvs(&["check", "--config", adaptive.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("adaptive.toml: service[0].adaptive.damping: 1.5 is not in (0, 1]"),
        "{stderr}"
    );
}

#[test]
fn simulate_applies_ctl_lines_between_flows() {
    let flows = tmp("ctl-flows.txt");
    std::fs::write(
        &flows,
        "tcp 198.18.100.5 2000 198.18.0.100 81\n\
         ctl -a -t 198.18.0.100:81 -r 198.19.0.13 -g -w 1\n\
         tcp 198.18.100.5 2001 198.18.0.100 81\n\
         tcp 198.18.100.5 2002 198.18.0.100 81\n\
         ctl -e -t 198.18.0.100:81 -r 198.19.0.13 -g -w 0\n\
         tcp 198.18.100.5 2003 198.18.0.100 81\n\
         tcp 198.18.100.5 2004 198.18.0.100 81\n\
         ctl -Ln -t 198.18.0.100:81\n\
         ctl -d -t 198.18.0.100:81 -r 198.19.0.99\n",
    )
    .unwrap();
    let cfg = demo_config();
    let (ok, stdout, stderr) = xvs(&[
        "simulate",
        "--config",
        cfg.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
    ]);
    assert!(!ok, "the failing ctl line fails the run: {stdout}");
    assert!(stderr.contains("line 9"), "{stderr}");
    let picks: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" => ") && !l.starts_with("#"))
        .map(|l| {
            l.split("=> ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
        })
        .collect();
    // rr over [.12]; -a .13 prepends it (list .13 .12) and leaves the cursor on .12: next .13,
    // then .12; at weight 0 .13 is skipped.
    assert_eq!(
        picks,
        [
            "198.19.0.12:81",
            "198.19.0.13:81",
            "198.19.0.12:81",
            "198.19.0.12:81",
            "198.19.0.12:81"
        ]
    );
    assert!(
        stdout.contains("      | TCP  198.18.0.100:81 rr")
            && stdout.contains("      |   -> 198.19.0.13:81               Route   0"),
        "{stdout}"
    );
}

/// `xvs simulate --workers 2`: the flows spread over two workers, and the decisions are those
/// of one worker (one kernel): wlc with `u_threshold = 2` on each of 3 backends accepts 6 of
/// 10 connections held open and refuses 4, rr gives 3/3/3 over 9.
#[test]
fn simulate_on_two_workers_decides_as_one() {
    let cfg = tmp("workers.toml");
    let backend = |n: u8| {
        format!(
            "[[service.backend]]\naddress = \"198.19.0.{n}\"\nport = 8080\nmethod = \"nat\"\nu_threshold = 2\n"
        )
    };
    let mut text = String::new();
    for (port, sched) in [(80, "wlc"), (81, "rr")] {
        text.push_str(&format!(
            "[[service]]\nprotocol = \"tcp\"\nvip = \"198.18.0.100\"\nport = {port}\nscheduler = \"{sched}\"\n"
        ));
        for n in 11..=13 {
            let b = backend(n);
            text.push_str(if sched == "rr" {
                b.trim_end_matches("u_threshold = 2\n")
            } else {
                &b
            });
        }
    }
    std::fs::write(&cfg, text).unwrap();
    let flows = tmp("workers-flows.txt");
    let mut list = String::new();
    for i in 0..10 {
        list.push_str(&format!(
            "tcp 198.18.100.{} {} 198.18.0.100 80\n",
            5 + i,
            2000 + i
        ));
    }
    for i in 0..9 {
        list.push_str(&format!(
            "tcp 198.18.101.{} {} 198.18.0.100 81\n",
            5 + i,
            3000 + i
        ));
    }
    std::fs::write(&flows, list).unwrap();
    let run = |workers: &str| {
        let (ok, stdout, stderr) = xvs(&[
            "simulate",
            "--config",
            cfg.to_str().unwrap(),
            "--flows",
            flows.to_str().unwrap(),
            "--workers",
            workers,
        ]);
        assert!(ok, "{stderr}");
        stdout
    };
    let one = run("1");
    let two = run("2");
    let decisions = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains(" => ") && !l.starts_with('#'))
            .map(|l| l.to_string())
            .collect()
    };
    assert_eq!(decisions(&one), decisions(&two), "{two}");
    let per_worker: Vec<u64> = two
        .lines()
        .filter_map(|l| l.strip_prefix("# worker "))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(per_worker.len(), 2, "{two}");
    assert!(per_worker.iter().all(|&n| n >= 3), "{two}");
    let d = decisions(&two);
    let refused = d[..10].iter().filter(|l| l.contains("no backend")).count();
    assert_eq!(refused, 4, "{two}");
    for n in 11..=13 {
        let to = |l: &&String| l.contains(&format!("=> 198.19.0.{n}:8080"));
        assert_eq!(d[..10].iter().filter(to).count(), 2, "{two}");
        assert_eq!(d[10..].iter().filter(to).count(), 3, "{two}");
    }
}
