//! Response rate limiting for the UDP answers of the DNS responder, against reflection and
//! amplification with spoofed sources (after BIND's RRL, ISC "Response Rate Limiting in the
//! Domain Name System" and RFC 8906 §6's reference to it): each client network — the /24 of an
//! IPv4 client, the /56 of an IPv6 one — may receive `per_second` answers a second, with a
//! burst of one second's worth (a GCRA token bucket). Over the limit, every `slip`-th answer
//! goes out truncated (TC, no records: a real client retries over TCP, which needs a genuine
//! source address) and the others are dropped; `slip = 0` drops them all. Unlike BIND, the key
//! is the client network alone, not also the response. TCP is never limited.
//!
//! The table is bounded ([`TABLE_MAX`]): when full, entries idle for over a second are dropped;
//! if it is still full, the answer is sent and counted as `table_full`.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType};
use xvs_schedulers::Time;

/// Most client networks tracked at once.
pub const TABLE_MAX: usize = 65_536;

const SECOND: u64 = 1_000_000_000;

/// What to do with one UDP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Over the limit: send it truncated.
    Slip,
    /// Over the limit: send nothing.
    Drop,
    /// The table was full: sent without limiting.
    TableFull,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Theoretical arrival time of the next conforming answer (ns).
    tat: u64,
    /// Answers limited since the last conforming one.
    limited: u32,
    last: u64,
}

/// The limiter of one responder.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    slip: u32,
    table: HashMap<IpAddr, Entry>,
}

/// The client network a client counts in.
fn network(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(v) => IpAddr::V4((u32::from(v) & 0xffff_ff00).into()),
        IpAddr::V6(v) => IpAddr::V6((u128::from(v) & !((1u128 << 72) - 1)).into()),
    }
}

impl RateLimiter {
    /// `per_second` answers a second per client network (at least 1); every `slip`-th
    /// limited answer truncated (0: none).
    pub fn new(per_second: u32, slip: u32) -> Self {
        RateLimiter {
            per_second: per_second.max(1),
            slip,
            table: HashMap::new(),
        }
    }

    /// The verdict for one answer to `client` at `now`.
    pub fn check(&mut self, client: IpAddr, now: Time) -> Verdict {
        let now = now.0;
        let key = network(client);
        if !self.table.contains_key(&key) && self.table.len() >= TABLE_MAX {
            self.table
                .retain(|_, e| now.saturating_sub(e.last) <= SECOND);
            if self.table.len() >= TABLE_MAX {
                return Verdict::TableFull;
            }
        }
        let step = SECOND / u64::from(self.per_second);
        let e = self.table.entry(key).or_insert(Entry {
            tat: now,
            limited: 0,
            last: now,
        });
        e.last = now;
        let tat = e.tat.max(now);
        // Conforming while the backlog is under one second (the burst).
        if tat + step <= now + SECOND {
            e.tat = tat + step;
            e.limited = 0;
            return Verdict::Send;
        }
        e.limited = e.limited.wrapping_add(1);
        if self.slip > 0 && e.limited.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// `response` with its records removed and TC set (the slipped form); `None` if it does not
/// parse.
pub fn truncated(response: &[u8]) -> Option<Vec<u8>> {
    let m = Message::from_vec(response).ok()?;
    let mut t = m.truncate();
    t.metadata.id = m.metadata.id;
    t.metadata.message_type = MessageType::Response;
    t.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let mut r = RateLimiter::new(10, 2);
        let verdicts: Vec<Verdict> = (0..14).map(|_| r.check(A, Time(0))).collect();
        assert!(
            verdicts[..10].iter().all(|v| *v == Verdict::Send),
            "{verdicts:?}"
        );
        assert_eq!(
            verdicts[10..],
            [Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]
        );
        // 100 ms later one more answer conforms.
        assert_eq!(r.check(A, Time(100_000_000)), Verdict::Send);
        assert_eq!(r.check(A, Time(100_000_000)), Verdict::Drop);
        // The same /24 shares the budget; another /24 has its own.
        assert_ne!(
            r.check(
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 200)),
                Time(100_000_000)
            ),
            Verdict::Send
        );
        assert_eq!(
            r.check(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 9)), Time(100_000_000)),
            Verdict::Send
        );
        // Over ten seconds at twice the rate: about half the answers are sent.
        let mut r = RateLimiter::new(10, 0);
        let sent = (0..200u64)
            .filter(|i| r.check(A, Time(i * 50_000_000)) == Verdict::Send)
            .count();
        assert!((100..=111).contains(&sent), "{sent}");
    }

    #[test]
    fn truncated_keeps_the_id_and_question() {
        use hickory_proto::op::Query;
        use hickory_proto::rr::rdata::A as ARecord;
        use hickory_proto::rr::{Name, RData, Record, RecordType};
        let mut m = Message::response(77, hickory_proto::op::OpCode::Query);
        let name = Name::from_ascii("www.lb.example.").unwrap();
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name,
            5,
            RData::A(ARecord(Ipv4Addr::new(198, 18, 1, 1))),
        ));
        let t = Message::from_vec(&truncated(&m.to_vec().unwrap()).unwrap()).unwrap();
        assert_eq!(t.metadata.id, 77);
        assert!(t.metadata.truncation);
        assert!(t.answers.is_empty());
        assert_eq!(t.queries.len(), 1);
        assert_eq!(truncated(&[1, 2]), None);
    }
}
