//! A master/backup pair of xvs directors with connection sync, in the namespace testbed with two
//! directors: 1000 long-lived TCP connections (each exchanging a line every second) go through
//! the master's NAT service; the backup starts its daemon (`xvs ctl --start-daemon`) only once they
//! are open and synced, so it holds them through a bulk resync (xvs's request, answered by the
//! master), and again after it is SIGKILLed and restarted; the test then SIGKILLs the master and
//! moves the VIP (the router's route) and the NAT return path (the backends' floating gateway address, with a
//! gratuitous ARP) to the backup. At least 99 % of the connections must go on exchanging data
//! without a reset.
//! Needs root; skipped loudly otherwise.

use std::time::{Duration, Instant};

mod dataplane_support;
use dataplane_support::pair::{
    config, ctl, established, start_echo_backends, worker_rx, LongLivedClient,
};
use dataplane_support::{skip_unless_root, Testbed};

const CONNS: usize = 1000;

#[test]
fn backup_takes_over_1000_long_lived_connections() {
    if skip_unless_root("sync pair test") {
        return;
    }
    let tb = Testbed::up_with("sp", &[("DIRECTORS", "2"), ("SERVERS", "0")]);
    for dev in ["df", "db", "df2", "db2"] {
        let (ok, _) = tb.exec("rt", &["ethtool", "-L", dev, "tx", "1"]);
        assert!(ok, "ethtool -L {dev} tx 1");
    }
    let _echo = start_echo_backends(&tb);
    // The backends' gateway is a floating address (as in a keepalived LVS-NAT pair), held by
    // the master: established TCP sockets keep their route, so only a moved address with a
    // gratuitous ARP takes their replies to the other director.
    tb.exec(
        "dir",
        &["ip", "addr", "add", "198.18.3.254/24", "dev", "back"],
    );
    for b in ["b1", "b2", "b3"] {
        tb.exec(
            b,
            &["ip", "route", "replace", "default", "via", "198.18.3.254"],
        );
    }
    let dir = std::env::temp_dir().join(format!("xvs-sync-pair-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let master_sync = "\n[sync.master]\ninterface = \"back\"\nsyncid = 7\n";
    std::fs::write(dir.join("m.toml"), config(1, master_sync)).unwrap();
    std::fs::write(dir.join("b.toml"), config(2, "")).unwrap();
    let (msock, bsock) = (dir.join("m.sock"), dir.join("b.sock"));
    let mut master = tb.start_xvs_in("dir", &dir.join("m.toml"), &msock, &dir.join("m.log"));
    let mut backup = tb.start_xvs_in("dir2", &dir.join("b.toml"), &bsock, &dir.join("b.log"));
    let (mns, bns) = (tb.ns("dir"), tb.ns("dir2"));
    let (_, daemons, _) = ctl(&msock, &mns, &["-L", "--daemon"]);
    assert!(
        daemons.starts_with("master sync daemon (mcast=back, syncid=7"),
        "{daemons}"
    );

    // Neighbours the backup will need once traffic moves, resolved now.
    for (ns, addr) in [
        ("dir2", "198.18.3.11"),
        ("dir2", "198.18.3.12"),
        ("dir2", "198.18.3.13"),
        ("dir2", "198.18.1.1"),
        ("rt", "198.18.1.3"),
    ] {
        tb.exec(ns, &["ping", "-c", "1", "-W", "1", addr]);
    }
    tb.wait_neighbours(&["198.18.3.11", "198.18.3.12", "198.18.3.13"]);

    let client = LongLivedClient::connect(&tb, CONNS, 32);
    // The master has sent every connection by now (at its third inbound packet, each message
    // within 2 s), while no backup listened: the next updates would come 50 packets later.
    std::thread::sleep(Duration::from_secs(3));
    let on_master = established(&msock, &mns);
    assert_eq!(on_master, CONNS, "master's ESTABLISHED connections");
    assert_eq!(
        established(&bsock, &bns),
        0,
        "nothing synced without a daemon"
    );

    // The backup's daemon through ipvsadm's verb: it asks for a bulk resync and is warm at
    // once. Then the same after a SIGKILL and restart of the backup.
    for round in ["start", "restart"] {
        if round == "restart" {
            let _ = backup.0.kill();
            let _ = backup.0.wait();
            // The dead process's socket file stays; the new one replaces it.
            let _ = std::fs::remove_file(&bsock);
            backup = tb.start_xvs_in("dir2", &dir.join("b.toml"), &bsock, &dir.join("b.log"));
            assert_eq!(
                established(&bsock, &bns),
                0,
                "a restarted director starts empty"
            );
        }
        let asked = Instant::now();
        let (ok, _, err) = ctl(
            &bsock,
            &bns,
            &[
                "--start-daemon",
                "backup",
                "--mcast-interface",
                "back",
                "--syncid",
                "7",
            ],
        );
        assert!(ok, "--start-daemon backup: {err}");
        let (_, daemons, _) = ctl(&bsock, &bns, &["-L", "--daemon"]);
        assert_eq!(
            daemons,
            "backup sync daemon (mcast=back, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        );
        let deadline = asked + Duration::from_secs(10);
        let mut held = 0;
        while Instant::now() < deadline {
            held = established(&bsock, &bns);
            if held >= CONNS {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (_, status, _) = ctl(&bsock, &bns, &["status"]);
        eprintln!(
            "bulk resync at backup {round}: {held} connections in {:?}\n{status}",
            asked.elapsed()
        );
        assert!(
            held >= CONNS,
            "backup holds {held} of {CONNS} after a bulk resync"
        );
        assert!(
            status.contains(" done 1 "),
            "the master's answer completed: {status}"
        );
    }

    // Hostile datagrams on the sync group: dropped and counted by reason, the table untouched.
    let hostile = "import socket\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton('198.18.3.2'))\n\
        for d in [b'\\x00\\x07', b'\\x00\\x07\\x00\\x30\\x01\\x01\\x00\\x00' + bytes(8),\n\
        \x20         b'\\x00\\x09\\x00\\x08\\x00\\x01\\x00\\x00']:\n\
        \x20   s.sendto(d, ('224.0.0.81', 8848))\n";
    let (ok, _) = tb.exec("dir", &["python3", "-c", hostile]);
    assert!(ok, "hostile datagrams sent");
    std::thread::sleep(Duration::from_millis(500));
    let (_, status, _) = ctl(&bsock, &bns, &["status"]);
    assert!(
        status.contains("decode_errors [too_short=1 size_mismatch=1 foreign_syncid=1]"),
        "{status}"
    );
    assert_eq!(established(&bsock, &bns), CONNS, "table unchanged");
    let (_, status, _) = ctl(&msock, &mns, &["status"]);
    eprintln!("master before the move:\n{status}");
    // The master dies (SIGKILL); the backup takes the floating gateway (and tells the backends
    // by gratuitous ARP, as keepalived would) and the router's route to the VIPs moves to it.
    let moved = Instant::now();
    let _ = master.0.kill();
    let _ = master.0.wait();
    tb.exec(
        "dir2",
        &["ip", "addr", "add", "198.18.3.254/24", "dev", "back"],
    );
    tb.exec(
        "rt",
        &[
            "ip",
            "route",
            "replace",
            "198.18.10.0/24",
            "via",
            "198.18.1.3",
        ],
    );
    let (ok, _) = tb.exec(
        "dir2",
        &["arping", "-U", "-c", "2", "-I", "back", "198.18.3.254"],
    );
    assert!(ok, "gratuitous ARP from the backup");
    eprintln!("master killed and traffic moved in {:?}", moved.elapsed());

    let ok = client.finish();
    let (_, status, _) = ctl(&bsock, &bns, &["status"]);
    eprintln!("backup after the move:\n{status}");
    let survived = ok as f64 / CONNS as f64;
    eprintln!(
        "failover survival: {ok}/{CONNS} connections ({:.1} %)",
        survived * 100.0
    );
    assert!(
        survived >= 0.99,
        "only {ok} of {CONNS} connections survived the failover"
    );
    // The backup really carried them: at least a few rounds of every connection went through
    // it (the master is dead, so nothing else could have).
    let rx = worker_rx(&status);
    assert!(
        rx >= 5 * CONNS as u64,
        "the backup forwarded only {rx} frames after the move"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
