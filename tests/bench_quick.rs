//! Smoke test of the benchmark harness: the real `xvs-bench run --quick` binary (testbed,
//! AF_XDP generator, every host-side target: bare bounce, xvs NAT/DR/TUN/FullNAT with rr, kernel
//! forwarding, nftables DNAT). Asserts only that it finished, wrote its reports, and that every
//! target forwarded traffic — never a timing. Needs root (namespaces, AF_XDP, nft); skipped with
//! a clear message otherwise.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

mod dataplane_support;
use dataplane_support::skip_unless_root;

/// The xvs-bench binary of the same profile, built if needed.
fn bench_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/bench_quick-… → target/<profile>/xvs-bench
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "-q", "-p", "xvs-bench"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        c.arg("--release");
    }
    let st = c.status().expect("cargo build -p xvs-bench");
    assert!(st.success(), "building xvs-bench failed");
    dir.join("xvs-bench")
}

#[test]
fn quick_run_forwards_through_every_host_side_target() {
    if skip_unless_root("bench quick") {
        return;
    }
    for tool in ["nft", "ethtool"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("!!!!! SKIPPED bench quick: {tool} not installed !!!!!");
            return;
        }
    }
    let bin = bench_binary();
    let out = std::env::temp_dir().join(format!("xvs-bench-quick-{}", std::process::id()));
    let t0 = Instant::now();
    let o = Command::new(&bin)
        .args(["run", "--quick", "--out"])
        .arg(&out)
        .output()
        .expect("run xvs-bench");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!(
        "{stdout}\n{stderr}\n(quick run took {:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    let v: serde_json::Value = serde_json::from_str(&json).expect("results.json parses");
    let results = v["results"].as_array().expect("results array");
    let names: Vec<&str> = results
        .iter()
        .filter_map(|r| r["target"].as_str())
        .collect();
    for want in [
        "bounce",
        "xvs-nat-rr",
        "xvs-dr-rr",
        "xvs-tun-rr",
        "xvs-fullnat-rr",
        "kernel-fwd",
        "nft-dnat",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for r in results {
        assert!(
            r["delivered"].as_u64().unwrap_or(0) > 0,
            "{} forwarded nothing: {r}",
            r["target"]
        );
    }
    assert!(out.join("results.md").exists() && out.join("results.svg").exists());
    assert!(o.status.success(), "xvs-bench exited with {:?}", o.status);
    let _ = std::fs::remove_dir_all(&out);
}
