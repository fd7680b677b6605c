//! The hostile corpus (`xvs_forwarding::testkit::hostile`, written out by the
//! `hostile_corpus` example) replayed through the real binary: `xvs replay` must print, for
//! every frame, exactly the verdict of the manifest; the counters must add up (rx equals tx
//! plus pass plus drops, ICMP answers apart); every transmitted frame must have valid
//! checksums, end where its IP packet ends (no trailer) and, on `back`, carry the egress VLAN
//! tag 200.

use std::process::Command;
use std::time::Duration;

use xvs::capture::{read_capture, CaptureWriter};
use xvs_forwarding::testkit::hostile::{self, Expect};
use xvs_forwarding::testkit::verify_checksums;
use xvs_forwarding::wire::{parse, Parsed};

#[test]
fn every_frame_has_its_expected_outcome() {
    let dir = std::env::temp_dir().join(format!("xvs-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = hostile::corpus();
    let pcap = dir.join("hostile.pcap");
    let mut w = CaptureWriter::create(&pcap).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let t = Duration::from_secs(1_764_000_000) + Duration::from_micros(i as u64);
        w.write(t, &c.frame).unwrap();
    }
    w.finish().unwrap();
    let cfg = dir.join("hostile.toml");
    std::fs::write(&cfg, hostile::CONFIG).unwrap();
    let out_pcap = dir.join("out.pcap");
    let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--in")
        .arg(&pcap)
        .arg("--out")
        .arg(&out_pcap)
        .output()
        .expect("run xvs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let mut failures = Vec::new();
    let mut sent = 0;
    for (i, c) in cases.iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or("");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&(i + 1).to_string().as_str()), "{line}");
        let n = match (words.get(1), words.get(3)) {
            (Some(&"pass"), _) => 1,
            (Some(&"answer"), _) => 3,
            (Some(&"tx"), Some(w)) if w.starts_with('+') => 4,
            _ => 2,
        };
        let got = words.get(1..1 + n).map(|w| w.join(" ")).unwrap_or_default();
        if got != c.expect.to_string() {
            failures.push(format!(
                "frame {} ({}): expected `{}`, got `{line}`",
                i + 1,
                c.name,
                c.expect
            ));
        }
        sent += match c.expect {
            Expect::Tx(_) | Expect::Answer(..) => 1,
            Expect::TxFragments(_, n) => 1 + n,
            _ => 0,
        };
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Counters: every frame once in tx, pass or a drop reason; answers apart.
    let tx = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Tx(_) | Expect::TxFragments(..)))
        .count();
    let pass = cases.iter().filter(|c| c.expect == Expect::Pass).count();
    let answers = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Answer(..)))
        .count();
    let drops = cases.len() - tx - pass;
    let summary = format!(
        "frames: rx {} tx {tx} pass {pass} drop {drops} (icmp answers sent {answers}, rate-limited 1)",
        cases.len()
    );
    assert!(stdout.contains(&summary), "{summary}\n{stdout}");

    let frames = read_capture(&out_pcap).unwrap();
    assert_eq!(frames.len(), sent);
    for (i, f) in frames.iter().enumerate() {
        verify_checksums(&f.data).unwrap_or_else(|e| panic!("output frame {i}: {e}"));
        let Parsed::Ip(p) = parse(&f.data) else {
            panic!("output frame {i} is not IP");
        };
        assert_eq!(p.ip_end, f.data.len(), "output frame {i} carries a trailer");
        if f.data[..6] != [2, 0, 0, 0, 0, 0xfe] {
            // Toward a backend: tagged with the back port's VLAN.
            assert_eq!(p.vlan, Some(200), "output frame {i} on back is not tagged");
        } else {
            assert!(p.vlan.is_none() || p.vlan == Some(100), "output frame {i}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
