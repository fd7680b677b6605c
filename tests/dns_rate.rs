//! DNS answer rate of the responder (`[[dns]]`) over UDP on loopback: one client sends
//! queries in windows of 64 and waits for their answers; prints answers per second and the
//! in-process (sans-I/O) rate. A measurement, ignored by default:
//! `cargo test --release --test dns_rate -- --ignored --nocapture`

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use xvs::config::{DnsConfig, DnsSource};
use xvs::dns::answer::Transport;
use xvs::dns::server::DnsServer;
use xvs_schedulers::Time;

fn config(port: u16) -> DnsConfig {
    DnsConfig {
        zone: "rate.test".into(),
        nameserver: "ns.rate.test".into(),
        names: vec!["w.rate.test".into()],
        listen: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        ttl: 5,
        negative_ttl: 5,
        answers: 1,
        scheduler: "wrr".into(),
        source: DnsSource::Addresses(
            (1..=8)
                .map(|i| (IpAddr::V4(Ipv4Addr::new(198, 18, 40, i)), u32::from(i)))
                .collect(),
        ),
        client_networks: Vec::new(),
        rate_limit: 0,
        slip: 2,
    }
}

fn query(id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(
        Name::from_ascii("w.rate.test.").unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

#[test]
#[ignore = "measurement: prints the DNS answer rate"]
fn udp_answer_rate() {
    // In process: the answer logic alone.
    let cfg = config(0);
    let mut r = cfg.responder().unwrap();
    r.set_backends(
        0,
        &match &cfg.source {
            DnsSource::Addresses(a) => a.clone(),
            DnsSource::Service(_) | DnsSource::Sites(_) => unreachable!(),
        },
    );
    let q = query(1);
    let n = 200_000u64;
    let t = Instant::now();
    for i in 0..n {
        let (b, _) = r.respond(
            &q,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Transport::Udp,
            Time(i),
        );
        assert!(b.is_some());
    }
    let in_process = n as f64 / t.elapsed().as_secs_f64();

    // Over UDP loopback through the responder's thread.
    let port = 25300 + (std::process::id() % 1000) as u16;
    let server = DnsServer::start(&config(port)).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    client.connect(("127.0.0.1", port)).unwrap();
    let queries: Vec<Vec<u8>> = (0..64u16).map(query).collect();
    let (mut answered, mut lost) = (0u64, 0u64);
    let mut buf = [0u8; 1500];
    let t = Instant::now();
    for _ in 0..1000 {
        for q in &queries {
            client.send(q).unwrap();
        }
        for _ in 0..queries.len() {
            match client.recv(&mut buf) {
                Ok(_) => answered += 1,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    server.stop();
    println!(
        "dns: in process {in_process:.0} answers/s; UDP loopback {:.0} answers/s \
         ({answered} answered, {lost} window(s) with a loss, {secs:.2} s)",
        answered as f64 / secs
    );
    assert!(answered > 0);
}
