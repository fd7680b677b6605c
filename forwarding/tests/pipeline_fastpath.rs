//! The pipeline's per-packet shortcuts must not change what it does:
//! * the per-backend next-hop cache follows the neighbour table (a changed MAC is used from the
//!   next packet on, a forgotten neighbour drops with `NoNeighbour`, a re-learnt one forwards),
//!   also when the whole `Network` is replaced.
#![cfg(feature = "testkit")]

mod common;

use std::net::IpAddr;

use common::*;
use xvs_forwarding::net::Network;
use xvs_forwarding::{DropReason, Pipeline, Time, Verdict};

fn established_nat(p: &mut Pipeline, now: Time) -> Vec<u8> {
    let c = IpAddr::V4(CLIENT4);
    let syn = frame_in(c, IpAddr::V4(VIP4)).tcp(40000, 80).syn().build();
    assert_eq!(process(p, now, FRONT, &syn).0, Verdict::Tx(BACK));
    frame_in(c, IpAddr::V4(VIP4)).tcp(40000, 80).ack().build()
}

#[test]
fn hop_cache_follows_the_neighbour_table() {
    let mut p = pipeline_with(&services(), 1024);
    let now = Time::from_secs(1);
    let ack = established_nat(&mut p, now);
    let backend = IpAddr::V4(backend4(11));
    let (v, out) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(&out[..6], &backend_mac(11));

    // The backend moves to another MAC: the next packet goes there.
    let moved = [2, 0, 0, 0, 9, 9];
    p.network_mut().set_neighbour(backend, moved);
    let (v, out) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(&out[..6], &moved);

    // Forgotten: dropped and counted, not sent to the old MAC.
    p.network_mut().remove_neighbour(backend);
    let (v, _) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Drop(DropReason::NoNeighbour));

    // Learnt again.
    p.network_mut().set_neighbour(backend, backend_mac(11));
    let (v, out) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(&out[..6], &backend_mac(11));

    // A whole new network without that neighbour.
    let mut bare = network();
    bare.remove_neighbour(backend);
    *p.network_mut() = bare;
    let (v, _) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Drop(DropReason::NoNeighbour));
    *p.network_mut() = network();
    let (v, out) = process(&mut p, now, FRONT, &ack);
    assert_eq!(v, Verdict::Tx(BACK));
    assert_eq!(&out[..6], &backend_mac(11));
    // A clone shares the generation but not later changes.
    let n: Network = p.network().clone();
    assert_eq!(n.generation(), p.network().generation());
}
