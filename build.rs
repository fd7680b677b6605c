//! Compiles xvs's XDP program (bpf/xvs_xdp.bpf.c) with clang into OUT_DIR; `src/io/xdp.rs` embeds
//! the object with `include_bytes!` and loads it with libbpf (`bpf_object__open_mem`).
//! `-g` is required: libbpf reads the map definitions from the BTF section.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/xvs_xdp.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("xvs_xdp.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-Wall", "-target", "bpf"]);
    // libbpf-sys (links = "bpf") exports its bundled headers (bpf/bpf_helpers.h, ...).
    if let Ok(inc) = env::var("DEP_BPF_INCLUDE") {
        cmd.arg(format!("-I{inc}"));
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    cmd.arg(format!("-I/usr/include/{arch}-linux-gnu"));
    cmd.args(["-c", src, "-o"]).arg(&out);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run `{clang}` to compile {src}: {e} (run scripts/install-deps.sh: needs clang and libbpf-dev)")
    });
    assert!(status.success(), "`{clang}` failed to compile {src}");
}
