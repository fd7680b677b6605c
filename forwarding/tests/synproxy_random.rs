//! The SYN proxy's state paths under seeded random operation sequences (the harness of the
//! `synproxy` fuzz target, `tests/synproxy_ops`): no panic, checksums valid on every frame
//! sent, counters and table consistent.

mod common;
mod synproxy_ops;

#[test]
fn random_operation_sequences_keep_the_invariants() {
    // xorshift64, fixed seed: the same inputs on every run.
    let mut x: u64 = 0x5eed_5e90_f5f0_0d11;
    let mut input = vec![0u8; 1500];
    let mut total = Total::default();
    for _ in 0..400 {
        for b in input.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        let c = synproxy_ops::run(&input);
        total.add(&c);
    }
    // The sequences reach every stage (so the invariants were checked there).
    eprintln!(
        "syn-acks {} opened {} established {} released {} bad cookies {} syn-retried {} gave-up {}",
        total.syn_acks,
        total.opened,
        total.established,
        total.released,
        total.bad,
        total.retried,
        total.gave_up
    );
    assert!(total.syn_acks > 100 && total.opened > 10 && total.established > 5);
    assert!(total.released > 0 && total.bad > 100);
    assert!(
        total.retried > 0 && total.gave_up > 0,
        "the retry timers ran"
    );
}

#[derive(Default)]
struct Total {
    syn_acks: u64,
    opened: u64,
    established: u64,
    released: u64,
    bad: u64,
    retried: u64,
    gave_up: u64,
}

impl Total {
    fn add(&mut self, c: &xvs_forwarding::Counters) {
        self.syn_acks += c.synproxy_syn_acks;
        self.opened += c.synproxy_opened;
        self.established += c.synproxy_established;
        self.released += c.synproxy_released;
        self.bad += c.drops.get(xvs_forwarding::DropReason::SynproxyBadCookie);
        self.retried += c.synproxy_syn_retried;
        self.gave_up += c.synproxy_gave_up;
    }
}
