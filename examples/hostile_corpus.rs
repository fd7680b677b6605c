//! Writes the hostile corpus (`xvs_forwarding::testkit::hostile`) into a directory: the
//! capture `hostile.pcap`, the configuration `hostile.toml` it runs with, and `manifest.tsv`
//! with the outcome each frame must have (`index<TAB>verdict<TAB>what`, the verdict in
//! `xvs replay`'s words). `cargo run --example hostile_corpus -- DIR`, then
//! `xvs replay --config DIR/hostile.toml --in DIR/hostile.pcap --out out.pcap`.
//! The `hostile_corpus` test does the same at test time and checks every line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use xvs::capture::CaptureWriter;
use xvs_forwarding::testkit::hostile;

/// The capture time of the first frame; frame `i` follows `i` microseconds later (all in the
/// same millisecond, so the ICMP rate limit sees a burst).
pub const START: Duration = Duration::from_secs(1_764_000_000);

fn main() -> Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: hostile_corpus DIR")?;
    write(&dir)
}

fn write(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let cases = hostile::corpus();
    let mut w = CaptureWriter::create(&dir.join("hostile.pcap"))?;
    for (i, c) in cases.iter().enumerate() {
        w.write(START + Duration::from_micros(i as u64), &c.frame)?;
    }
    w.finish()?;
    std::fs::write(dir.join("hostile.toml"), hostile::CONFIG)?;
    std::fs::write(dir.join("manifest.tsv"), hostile::manifest(&cases))?;
    println!("wrote {} frames to {}", cases.len(), dir.display());
    Ok(())
}
