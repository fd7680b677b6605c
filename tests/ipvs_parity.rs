//! Decision parity with real kernel IPVS: the scenarios of `bench/src/parity.rs` (rr, wrr 1/2/3,
//! sh, sh+sh-port, mh+mh-port, dh; lc, wlc, sed, nq, fo, ovf, lblc, lblcr on open/close traces;
//! sh and mh with fallback past a weight-0 backend; rr with persistence; lc, wlc, sed over UDP;
//! lc and wlc with direct routing; sh, sh-port, mh-port, dh, wlc over IPv6; and backends changed
//! mid-trace by `ctl` lines, run as `xvs ctl` by xvs simulate and as `ipvsadm` by the guest: rr
//! with an add and the cursor's backend deleted, wrr with -e/-a/-d, sh/mh/mh-port with an add and a
//! delete, lc/wlc/sh/mh with a backend quiesced (-w 0) and restored, `-E -s` rr -> wrr -> rr and
//! wlc -> sh -> wlc, `-E` with other flags only, a backend deleted and added again) through
//! `xvs simulate` and through ipvsadm in a QEMU guest booted from Debian's kernel package
//! (scripts/ipvs-guest/), one boot for all. Every scenario runs through `xvs simulate` twice:
//! with one worker, and with two (`--workers 2`: each frame to the worker the data plane's
//! steering makes its owner, two pipelines sharing counts and schedulers). Every scheduler
//! here is deterministic, so every flow must get the same backend and the final active/inactive
//! counts must agree, for both.
//!
//! Needs qemu-system-x86, cpio, gcc with static glibc (scripts/install-deps.sh) and, the first
//! time, Debian's package registry (the guest's packages are cached in target/ipvs-guest). When
//! the guest cannot be built or booted the test fails and says why; it never passes silently.

#[allow(dead_code)]
#[path = "../bench/src/parity.rs"]
mod parity;

use std::path::PathBuf;

#[test]
fn every_flow_gets_the_backend_kernel_ipvs_chooses() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let opts = parity::Options {
        xvs: PathBuf::from(env!("CARGO_BIN_EXE_xvs")),
        guest_script: repo.join("scripts/ipvs-guest/run.sh"),
        work: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ipvs-parity"),
        flows: 60,
        workers: vec![1, 2],
    };
    let report = parity::run(&opts).unwrap_or_else(|e| {
        panic!(
            "the kernel-IPVS reference guest could not be built or run: {e}\n\
             It needs qemu-system-x86, cpio and gcc with static glibc (scripts/install-deps.sh) \
             and Debian's package registry for the first download (apt-get download of the \
             kernel package, ipvsadm, busybox-static)."
        )
    });
    let text = report.render();
    println!("{text}");
    // 41 scenarios through one worker, then through two.
    assert_eq!(report.outcomes.len(), 82, "{text}");
    for o in &report.outcomes {
        assert_eq!(o.flows, 60, "{text}");
        if o.workers == 2 {
            assert_eq!(o.per_worker.len(), 2, "{}: worker tally\n{text}", o.label());
        }
        assert!(
            o.ctl_errors.is_empty(),
            "{}: the guest's ipvsadm refused a ctl line\n{text}",
            o.name
        );
        assert_eq!(
            o.same,
            o.flows,
            "{}: decisions differ from kernel IPVS\n{text}",
            o.label()
        );
        assert!(o.counts_same, "{}: final counts differ\n{text}", o.label());
    }
    // Two workers really shared the work: each opened connections (summed over scenarios).
    let mut tally = [0usize; 2];
    for o in report.outcomes.iter().filter(|o| o.workers == 2) {
        for (t, n) in tally.iter_mut().zip(&o.per_worker) {
            *t += n;
        }
    }
    println!("two workers: new connections per worker over all scenarios {tally:?}");
    assert!(tally.iter().all(|&n| n > 200), "{tally:?}");

    // rr-change deletes the backend rr's cursor is on: the one IPVS gave the flow just before.
    let all = parity::scenarios(opts.flows);
    let rr = all.iter().find(|s| s.name == "rr-change").unwrap();
    let text_rr = rr.flows_txt();
    let lines: Vec<&str> = text_rr.lines().collect();
    let del = lines
        .iter()
        .position(|l| l.starts_with("ctl -d "))
        .expect("rr-change deletes a backend");
    let deleted = lines[del].rsplit(' ').next().unwrap();
    assert_eq!(
        report.ipvs["rr-change"].answers[&del], deleted,
        "rr-change: the deleted backend is not the cursor's (flow {del})"
    );

    // Negative controls, against the same guest answers: the comparison does fail when xvs is
    // configured differently (backends added in the opposite order; one weight changed).
    let control = |name: &str, workers: u16, change: &dyn Fn(&mut parity::Scenario)| {
        let mut sc = all.iter().find(|s| s.name == name).unwrap().clone();
        change(&mut sc);
        let dir = opts
            .work
            .join("negative-control")
            .join(format!("{name}-x{workers}"));
        let x = parity::simulate(&opts.xvs, &dir, &sc, workers).unwrap();
        let o = parity::compare(&sc, &x, &report.ipvs[name], 5);
        assert!(
            o.same < o.flows,
            "{name}: a changed xvs configuration still agrees on {} of {} flows",
            o.same,
            o.flows
        );
        o.same
    };
    let rr = control("rr", 1, &|sc| sc.services[0].backends.reverse());
    let rr2 = control("rr", 2, &|sc| sc.services[0].backends.reverse());
    let mh = control("mh-port-v6", 1, &|sc| sc.services[0].backends[3].1 = 1);
    // And when a mid-trace change differs (wrr's -e to weight 3 instead of 4).
    let wrr = control("wrr-change", 2, &|sc| {
        let b = sc.services[0].backends[1].0;
        sc.ctl[0].1 = sc.ctl_backend("-e", b, 3);
    });
    println!(
        "negative controls: rr reversed {rr}/60 same (2 workers: {rr2}/60), mh-port-v6 \
         reweighted {mh}/60 same, wrr-change edited to another weight (2 workers) {wrr}/60 same"
    );
}
