//! `xvs import` on keepalived configurations written after keepalived's documented syntax
//! (keepalived.conf(5) and its doc/samples), in `tests/data/keepalived/CASE/`:
//!
//! - `keepalived.conf` (and what it includes): the input, imported with config id `lb1`.
//! - `xvs.toml`, `report.txt`, `exit`: the expected translation, report and exit status (golden
//!   files; `XVS_BLESS=1 cargo test --test import_keepalived` rewrites them after a reviewed change).
//! - `ipvsadm.txt`: written by hand, independently of the code: the IPVS state keepalived would set
//!   up for the file with every real server alive, as `ipvsadm -S -n` lines in ipvsadm's order.
//!   A line `!untranslated ADDR rule` is a rule keepalived would add that xvs cannot express; the
//!   report must name it and the translation must lack it.
//!
//! Round trip: the translated TOML loads in xvs's configuration loader, passes what `xvs check`
//! runs, and its `xvs ctl -S` listing equals `ipvsadm.txt` (scheduler, flags, method, weights,
//! persistence, thresholds). The binary is run too (`xvs import`, then `xvs check` on its output),
//! parse errors exit 2 with `file:line:col`, and a property test feeds the importer arbitrary text
//! and keepalived-like token soup: it never panics, and whatever it translates passes validation.

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use xvs::control::{format, DesiredState};
use xvs::import::{
    import_file, import_text, ImportError, ImportOptions, EXIT_OK, EXIT_PARSE, EXIT_UNTRANSLATED,
};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keepalived")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("keepalived.conf").is_file())
        .collect();
    v.sort();
    assert!(v.len() >= 8, "test configurations missing: {v:?}");
    v
}

fn opts() -> ImportOptions {
    ImportOptions {
        config_id: Some("lb1".into()),
        out_name: Some("xvs.toml".into()),
    }
}

fn golden(path: &Path, actual: &str) {
    if std::env::var_os("XVS_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (XVS_BLESS=1 writes it)", path.display()));
    if expected != actual {
        panic!(
            "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

#[test]
fn translations_and_reports_match_the_golden_files() {
    for case in cases() {
        let done = import_file(&case.join("keepalived.conf"), &opts())
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        golden(&case.join("xvs.toml"), &done.toml);
        golden(&case.join("report.txt"), &done.report_text());
        golden(&case.join("exit"), &format!("{}\n", done.exit_code()));
    }
}

#[test]
fn round_trip_lists_what_keepalived_would_configure_in_ipvs() {
    for case in cases() {
        let done = import_file(&case.join("keepalived.conf"), &opts()).unwrap();
        // The same code as `xvs check` (the importer ran it too; run it again from the text).
        let cfg = xvs::import::validate(Path::new("xvs.toml"), &done.toml)
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let listed = format::save(&DesiredState::from_config(&cfg));
        let want = std::fs::read_to_string(case.join("ipvsadm.txt")).unwrap();
        let mut expected = String::new();
        for line in want.lines() {
            match line.strip_prefix("!untranslated ") {
                Some(rest) => {
                    let addr = rest.split_whitespace().next().unwrap();
                    assert!(
                        done.report
                            .untranslated
                            .iter()
                            .any(|e| e.what.contains(addr)),
                        "{}: {addr} is not reported untranslated",
                        case.display()
                    );
                    assert!(!listed.contains(&format!("-r {addr}:")), "{addr} listed");
                }
                None => {
                    expected.push_str(line);
                    expected.push('\n');
                }
            }
        }
        assert_eq!(
            listed,
            expected,
            "{}: xvs ctl -S of the translation",
            case.display()
        );
    }
}

#[test]
fn exit_status_is_zero_only_when_everything_translated() {
    let clean = data().join("fwmark_group/keepalived.conf");
    assert_eq!(import_file(&clean, &opts()).unwrap().exit_code(), EXIT_OK);
    let partial = data().join("nat_http_get/keepalived.conf");
    let done = import_file(&partial, &opts()).unwrap();
    assert_eq!(done.exit_code(), EXIT_UNTRANSLATED);
    let report = done.report_text();
    assert!(
        report.contains("keepalived.conf:73: not translated: notify_down /usr/local/bin/page-oncall web3 down: "),
        "{report}"
    );
    // The sorry server and the quorum are xvs features: translated, not reported.
    assert!(!report.contains("sorry_server"), "{report}");
    assert!(!report.contains("quorum"), "{report}");
    assert!(done.toml.contains(
        "[service.sorry_server]\naddress = \"198.19.0.250\"\nport = 8080\nmethod = \"nat\"\n"
    ));
    assert!(done.toml.contains("quorum = 2\nhysteresis = 1\n"));
    // VRRP and global definitions: named once in the summary, not line by line.
    assert!(report.contains(
        "not an LVS setting (VRRP stays with keepalived: see xvs docs): global_defs (keepalived.conf:4), vrrp_instance VI_1 (keepalived.conf:14)"
    ));
    assert!(!report.contains("virtual_router_id"));
}

#[test]
fn conditionals_follow_the_config_id() {
    let file = data().join("include_tree/keepalived.conf");
    let lb2 = ImportOptions {
        config_id: Some("lb2".into()),
        ..opts()
    };
    let a = import_file(&file, &opts()).unwrap();
    let b = import_file(&file, &lb2).unwrap();
    assert_eq!((a.backends, b.backends), (3, 2));
    assert!(a.toml.contains("weight = 3") && !b.toml.contains("weight = 3"));
    // Files come in brace order (web before api), then sorted within one pattern.
    assert_eq!(
        a.files,
        vec![
            "keepalived.conf",
            "conf.d/vrrp.conf",
            "services/web.conf",
            "services/api.conf"
        ]
    );
}

fn parse_error(text: &str) -> (String, String) {
    match import_text("k.conf", text, &opts()) {
        Err(ImportError::Parse { location, message }) => (location, message),
        other => panic!("not a parse error: {other:?}"),
    }
}

#[test]
fn parse_errors_name_file_line_and_column() {
    let (at, msg) = parse_error("virtual_server 198.18.0.1 80 {\n  lb_algo rr\n");
    assert_eq!(at, "k.conf:1:30");
    assert!(msg.contains("never closed"), "{msg}");
    let (at, msg) = parse_error("virtual_server 198.18.0.1 80 {\n}\n  }\n");
    assert_eq!(at, "k.conf:3:3");
    assert!(msg.contains("without a matching"), "{msg}");
    let (at, msg) = parse_error("real_server 1.2.3.4 {\n  misc_path \"/bin/x\n}\n");
    assert_eq!(at, "k.conf:2:13");
    assert!(msg.contains("unterminated"), "{msg}");
    assert_eq!(
        ImportError::Parse {
            location: at,
            message: msg
        }
        .exit_code(),
        EXIT_PARSE
    );
}

#[test]
fn include_loops_are_parse_errors() {
    let dir = std::env::temp_dir().join(format!("xvs-import-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.conf"), "include b.conf\n").unwrap();
    std::fs::write(dir.join("b.conf"), "\n\ninclude a.conf\n").unwrap();
    let e = import_file(&dir.join("a.conf"), &opts()).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    match e {
        ImportError::Parse { location, message } => {
            assert_eq!(location, "b.conf:3:1");
            assert!(message.contains("include loop"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn parameters_and_predefined_names_expand() {
    let text = "$NET=198.18.9\n$P=80\n$RS=real_server ${NET}.11 $P\n\
                virtual_server ${NET}.1 $P {\n  protocol TCP\n  $RS {\n    weight 4\n  }\n}\n\
                virtual_server ${NET}.2 ${_HASH}x {\n}\n";
    let done = import_text("k.conf", text, &opts()).unwrap();
    assert!(
        done.toml.contains("vip = \"198.18.9.1\"\nport = 80"),
        "{}",
        done.toml
    );
    assert!(done
        .toml
        .contains("address = \"198.18.9.11\"\nport = 80\nweight = 4"));
    // ${_HASH} is a '#' that does not start a comment: "#x" is not a port.
    assert!(done
        .report
        .untranslated
        .iter()
        .any(|e| e.what == "virtual_server 198.18.9.2 #x"));
    let multi = "$VS= \\\n virtual_server 198.18.9.3 80 { \\\n }\n$VS\n";
    let done = import_text("k.conf", multi, &opts()).unwrap();
    assert!(done
        .report_text()
        .contains("k.conf:1: not translated: $VS=: multi-line parameter definitions"));
}

fn xvs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xvs"))
}

#[test]
fn binary_writes_a_file_that_xvs_check_accepts() {
    let dir = std::env::temp_dir().join(format!("xvs-import-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (case, code) in [
        ("fwmark_group", 0),
        ("dr_tcp_persistence", 0),
        ("nat_http_get", 3),
    ] {
        let out = dir.join(format!("{case}.toml"));
        let report = dir.join(format!("{case}.report"));
        let run = xvs()
            .arg("import")
            .arg(data().join(case).join("keepalived.conf"))
            .args(["--config-id", "lb1", "--out"])
            .arg(&out)
            .arg("--report")
            .arg(&report)
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(code), "{case}: {run:?}");
        assert!(run.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(stderr, std::fs::read_to_string(&report).unwrap());
        let golden = std::fs::read_to_string(data().join(case).join("xvs.toml")).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), golden);
        let check = xvs()
            .arg("check")
            .arg("--config")
            .arg(&out)
            .output()
            .unwrap();
        assert!(check.status.success(), "{case}: xvs check: {check:?}");
        assert!(String::from_utf8_lossy(&check.stdout).contains(": ok: "));
    }
    // Without --out the TOML goes to standard output.
    let run = xvs()
        .arg("import")
        .arg(data().join("fnat_laddr/keepalived.conf"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&run.stdout).contains("local_addresses = ["));
    // No such file: status 1.
    let run = xvs()
        .arg("import")
        .arg(dir.join("none.conf"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("none.conf: cannot read: "));
    // A parse error: status 2, file:line:col, nothing written.
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "virtual_server 198.18.0.1 80 {\n").unwrap();
    let out = dir.join("bad.toml");
    let run = xvs()
        .arg("import")
        .arg(&bad)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("bad.conf:1:30: "));
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Words keepalived configurations are made of, for the token-soup property test.
const WORDS: &[&str] = &[
    "virtual_server",
    "real_server",
    "virtual_server_group",
    "local_address_group",
    "group",
    "fwmark",
    "198.18.0.1",
    "198.18.0.1-3",
    "198.18.0.0/30",
    "2001:2::1",
    "80",
    "0",
    "443",
    "lb_algo",
    "lvs_sched",
    "rr",
    "sh",
    "mh",
    "wlc",
    "bogus",
    "lb_kind",
    "lvs_method",
    "NAT",
    "DR",
    "TUN",
    "FNAT",
    "type",
    "gue",
    "ipip",
    "persistence_timeout",
    "persistence_granularity",
    "255.255.255.0",
    "64",
    "protocol",
    "TCP",
    "UDP",
    "SCTP",
    "ops",
    "sh-port",
    "mh-fallback",
    "flag-1",
    "weight",
    "70000",
    "uthreshold",
    "lthreshold",
    "10",
    "5",
    "HTTP_GET",
    "SSL_GET",
    "TCP_CHECK",
    "UDP_CHECK",
    "MISC_CHECK",
    "DNS_CHECK",
    "url",
    "path",
    "/",
    "/x y",
    "status_code",
    "200-299",
    "digest",
    "ff20ad2481f97b1754ef3e12ecd3a9cc",
    "misc_path",
    "\"/bin/true a\"",
    "require_reply",
    "payload",
    "ab 1",
    "connect_port",
    "connect_timeout",
    "retry",
    "delay_loop",
    "0.001",
    "delay_before_retry",
    "alpha",
    "inhibit_on_failure",
    "sorry_server",
    "quorum",
    "laddr_group_name",
    "laddr_g1",
    "ip_family",
    "inet6",
    "global_defs",
    "vrrp_instance",
    "lvs_timeouts",
    "tcp",
    "{",
    "}",
    "{",
    "}",
    "\n",
    "\n",
    "\n",
    "#",
    "!",
    "\"",
    "'",
    "@lb1",
    "@^lb1",
    "$X=1",
    "$X",
    "${X}",
    "include",
    "virtualhost",
    "a b",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check_import(&text)?;
    }

    #[test]
    fn keepalived_token_soup_never_panics(words in proptest::collection::vec(0..WORDS.len(), 0..120)) {
        let text: Vec<&str> = words.iter().map(|&i| WORDS[i]).collect();
        check_import(&text.join(" "))?;
    }
}

/// Import `text`: a parse error or a translation that passed validation; never a translation
/// xvs rejects, never a panic.
fn check_import(text: &str) -> Result<(), TestCaseError> {
    match import_text("k.conf", text, &opts()) {
        Ok(done) => {
            prop_assert!(done.exit_code() == EXIT_OK || done.exit_code() == EXIT_UNTRANSLATED);
            let _ = done.report_text();
        }
        Err(ImportError::Parse { .. }) => {}
        Err(e @ (ImportError::Invalid(_) | ImportError::Read { .. })) => {
            return Err(TestCaseError::fail(format!("{e}\n--- input\n{text}")))
        }
    }
    Ok(())
}

#[test]
fn virtualhost_precedence_is_url_checker_real_server_virtual_server() {
    let conf = |url: &str, chk: &str, rs: &str| {
        format!(
            "virtual_server 198.18.0.1 80 {{\n protocol TCP\n virtualhost vs.example\n \
             real_server 198.19.0.1 80 {{\n  {rs}\n  HTTP_GET {{\n   {chk}\n   url {{\n    path /\n    {url}\n   }}\n  }}\n }}\n}}\n"
        )
    };
    let host = |text: String| {
        let done = import_text("k.conf", &text, &opts()).unwrap();
        let line = done
            .toml
            .lines()
            .find(|l| l.starts_with("host = "))
            .map(str::to_string);
        line
    };
    assert_eq!(
        host(conf(
            "virtualhost url.example",
            "virtualhost chk.example",
            "virtualhost rs.example"
        )),
        Some("host = \"url.example\"".into())
    );
    assert_eq!(
        host(conf(
            "",
            "virtualhost chk.example",
            "virtualhost rs.example"
        )),
        Some("host = \"chk.example\"".into())
    );
    assert_eq!(
        host(conf("", "", "virtualhost rs.example")),
        Some("host = \"rs.example\"".into())
    );
    assert_eq!(host(conf("", "", "")), Some("host = \"vs.example\"".into()));
}

/// Every keyword of keepalived.conf(5)'s virtual server synopsis is known: translated, or reported
/// with a reason, never as an unknown keyword.
#[test]
fn every_synopsis_keyword_is_known() {
    let done = import_file(&data().join("manpage_synopsis/keepalived.conf"), &opts()).unwrap();
    for e in done.report.untranslated.iter().chain(&done.report.warnings) {
        assert!(!e.why.contains("unknown"), "{e:?}");
    }
    assert_eq!(done.exit_code(), EXIT_UNTRANSLATED);
}

#[test]
fn quorum_sorry_server_and_dynamic_misc_check_translate_and_load() {
    let text = r#"
virtual_server 198.18.0.10 80 {
    lb_kind DR
    protocol TCP
    quorum 3
    hysteresis 5
    quorum_up "/usr/local/bin/notify 'quorum up' now"
    quorum_down /usr/local/bin/down
    omega
    alpha
    sorry_server 198.19.0.99 8080
    sorry_server_inhibit
    real_server 198.19.0.11 80 {
        weight 2
        MISC_CHECK {
            misc_path "/usr/local/bin/check --fast"
            misc_dynamic
        }
    }
}
virtual_server 198.18.0.11 80 {
    lb_kind NAT
    protocol TCP
    sorry_server 2001:2::99 80
    real_server 198.19.0.12 80 {
        TCP_CHECK {
        }
    }
}
"#;
    let done = import_text("k.conf", text, &opts()).unwrap();
    let toml = &done.toml;
    assert!(toml.contains("quorum = 3\nhysteresis = 5\n"), "{toml}");
    assert!(
        toml.contains("quorum_up = \"/usr/local/bin/notify 'quorum up' now\"\n"),
        "{toml}"
    );
    assert!(toml.contains("quorum_down = \"/usr/local/bin/down\"\nomega = true\n"));
    // DR takes the service's port (and says so); inhibit kept.
    assert!(
        toml.contains(
            "[service.sorry_server]\naddress = \"198.19.0.99\"\nport = 80\nmethod = \"dr\"\ninhibit = true\n"
        ),
        "{toml}"
    );
    assert!(toml.contains("dynamic = true\n"), "{toml}");
    assert!(toml.contains("initially_down = true\n"), "{toml}");
    let report = done.report_text();
    assert!(
        report.contains("k.conf:11: warning: sorry_server 198.19.0.99 8080: port 8080 differs"),
        "{report}"
    );
    // An IPv6 sorry server for an IPv4 NAT service is left out and reported.
    assert!(
        report.contains("k.conf:24: not translated: sorry_server 2001:2::99 80: address family"),
        "{report}"
    );
    assert_eq!(toml.matches("[service.sorry_server]").count(), 1);
    // The translation loads: quorum, scripts, sorry server and the dynamic check as given.
    let cfg = xvs::import::validate(Path::new("xvs.toml"), toml).unwrap();
    let q = &cfg.service_quorum[0];
    assert_eq!((q.quorum, q.hysteresis, q.omega), (3, 5, true));
    let sorry = q.sorry.as_ref().unwrap();
    assert_eq!((sorry.backend.port, sorry.inhibit), (80, true));
    assert!(cfg.service_quorum[1].sorry.is_none());
    let spec = &cfg.checks[0].3;
    match &spec.probe {
        xvs::control::health::Probe::Exec(e) => assert!(e.dynamic),
        _ => panic!("not an exec check"),
    }
    assert!(spec.initially_down);
}
