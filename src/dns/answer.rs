//! The answer logic of xvs's authoritative DNS responder, sans I/O: a query message, the
//! current healthy backends of each configured name and `now` in, the response bytes out.
//!
//! Behaviour follows RFC 1034 §4.3.2 / RFC 1035 §4.1 (authoritative answers: AA set, NXDOMAIN
//! with the zone's SOA in the authority section for names under the zone that do not exist,
//! NODATA — NOERROR, no answer, SOA in authority — for other record types of an existing name,
//! REFUSED for names outside the zone), RFC 2308 §3 (SOA in negative answers, its TTL the
//! SOA minimum), RFC 6891 (EDNS: an OPT answered with an OPT, the client's payload size bounds
//! the UDP response) and RFC 1035 §4.2.1 / RFC 7766 (a UDP answer larger than 512 bytes, or
//! the EDNS size, goes out empty with TC set so the client retries over TCP). SERVFAIL answers
//! a configured name none of whose backends is healthy. The wire format is hickory-proto's.
//!
//! Choice of records: each name keeps one `crate::balance::Pool` (a scheduler of the xvs
//! suite, shared with the HTTP redirect) per address family, over that family's healthy
//! backends. The scheduler picks the first record for a flow whose source is the client's
//! address (UDP, port 0, to the responder's port 53 address); the other `answers - 1` records
//! are the next backends of the same family in configuration order, so an answer never
//! repeats an address. Only the schedulers that need no
//! connection counts are accepted ([`DNS_SCHEDULERS`]): DNS has no connections to count.
//!
//! Client networks: a client in a configured network (the most specific one) is answered from
//! that network's preferred backends while one of them of the asked family is available, from
//! all backends otherwise — each such subset has its own schedulers. The client is the query's
//! EDNS Client Subnet address when present (RFC 7871; masked to its source prefix, a source
//! prefix of 0 meaning the sender's address), echoed in the answer with a scope prefix equal to
//! the source prefix when the answer depends on the client (client networks, sh, mh) and 0
//! otherwise.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use xvs_schedulers::{BackendId, BackendView, Flow, Time};

use crate::balance::Pool;

/// The schedulers a `[[dns]]` entry may use: those that pick without connection counts.
pub const DNS_SCHEDULERS: &[&str] = crate::balance::STATELESS_SCHEDULERS;

/// The largest UDP response to a query without EDNS (RFC 1035 §4.2.1).
pub const UDP_PLAIN_MAX: usize = 512;

/// The transport a query came over: UDP responses are bounded in size, TCP ones are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the responder did with one query, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with this rcode; `name` is the index of the configured name, if the query
    /// was for one; `qtype` the type asked for, if the query had one question; `truncated` when
    /// the UDP answer went out with TC.
    Answered {
        name: Option<usize>,
        qtype: Option<RecordType>,
        rcode: u16,
        truncated: bool,
    },
    /// Not a parseable DNS query (or a response): dropped, nothing sent.
    Dropped,
}

/// One configured name with its backends.
#[derive(Debug)]
pub struct NameEntry {
    pub name: Name,
    pub ttl: u32,
    /// Records in one answer (at least 1).
    pub answers: usize,
    /// Index `2 * slot + family` (family 0 IPv4, 1 IPv6; slot 0 every backend, slot `k + 1`
    /// the backends preferred for client network `k`).
    pools: Vec<Pool>,
}

/// Clients in `prefix/len` (their own address, or the EDNS Client Subnet address when the
/// query carries one) are answered from `prefer` while one of those is available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientNetwork {
    pub prefix: IpAddr,
    pub len: u8,
    pub prefer: Vec<IpAddr>,
}

impl ClientNetwork {
    fn contains(&self, a: IpAddr) -> bool {
        self.prefix.is_ipv6() == a.is_ipv6() && masked(self.prefix, self.len) == masked(a, self.len)
    }
}

/// Errors of building a responder.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsConfigError {
    #[error("scheduler {0:?} cannot choose DNS answers (use one of rr, wrr, sh, mh)")]
    Scheduler(String),
    #[error("{0:?} is not a valid DNS name")]
    BadName(String),
    #[error("name {name} is not under the zone {zone}")]
    OutsideZone { name: String, zone: String },
}

/// An authoritative responder for one zone.
#[derive(Debug)]
pub struct Responder {
    zone: Name,
    soa: Record,
    names: Vec<NameEntry>,
    networks: Vec<ClientNetwork>,
    /// A name's scheduler hashes the client address (sh, mh).
    hashes_client: bool,
}

/// Parses a configured name into a fully qualified, lower-case DNS name.
pub fn parse_name(text: &str) -> Result<Name, DnsConfigError> {
    let mut name = Name::from_ascii(text).map_err(|_| DnsConfigError::BadName(text.to_string()))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

impl Responder {
    /// A responder for `zone` with an SOA naming `mname` (and `hostmaster.<zone>`), whose
    /// minimum (negative-answer TTL, RFC 2308) is `negative_ttl`.
    pub fn new(zone: &str, mname: &str, negative_ttl: u32) -> Result<Self, DnsConfigError> {
        let zone = parse_name(zone)?;
        let mname = parse_name(mname)?;
        let rname = Name::from_ascii("hostmaster")
            .and_then(|h| h.append_domain(&zone))
            .map_err(|_| DnsConfigError::BadName(zone.to_string()))?;
        let soa = Record::from_rdata(
            zone.clone(),
            negative_ttl,
            RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86400, negative_ttl)),
        );
        Ok(Responder {
            zone,
            soa,
            names: Vec::new(),
            networks: Vec::new(),
            hashes_client: false,
        })
    }

    /// Sets the client networks (most specific match wins); call before [`Responder::add_name`].
    pub fn set_client_networks(&mut self, networks: Vec<ClientNetwork>) {
        self.networks = networks;
    }

    /// Adds a name answered by `scheduler`; returns its index.
    pub fn add_name(
        &mut self,
        name: &str,
        ttl: u32,
        answers: usize,
        scheduler: &str,
    ) -> Result<usize, DnsConfigError> {
        let parsed = parse_name(name)?;
        if !self.zone.zone_of(&parsed) {
            return Err(DnsConfigError::OutsideZone {
                name: parsed.to_string(),
                zone: self.zone.to_string(),
            });
        }
        let mut pools = Vec::new();
        for _ in 0..2 * (self.networks.len() + 1) {
            pools.push(
                Pool::new(scheduler)
                    .map_err(|_| DnsConfigError::Scheduler(scheduler.to_string()))?,
            );
        }
        self.hashes_client |= matches!(scheduler, "sh" | "mh");
        self.names.push(NameEntry {
            name: parsed,
            ttl,
            answers: answers.max(1),
            pools,
        });
        Ok(self.names.len() - 1)
    }

    /// The configured names, by index.
    pub fn names(&self) -> &[NameEntry] {
        &self.names
    }

    /// The zone apex.
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// Sets the healthy backends (address, weight) of name `index`; the schedulers are
    /// re-initialised only when the set changed.
    pub fn set_backends(&mut self, index: usize, healthy: &[(IpAddr, u32)]) {
        let Some(entry) = self.names.get_mut(index) else {
            return;
        };
        for (k, pool) in entry.pools.iter_mut().enumerate() {
            let (slot, v6) = (k / 2, k % 2 == 1);
            let prefer = slot.checked_sub(1).map(|n| &self.networks[n].prefer);
            let view: Vec<BackendView> = healthy
                .iter()
                .enumerate()
                .filter(|(_, (a, _))| a.is_ipv6() == v6)
                .filter(|(_, (a, _))| prefer.is_none_or(|p| p.contains(a)))
                .map(|(i, &(addr, weight))| BackendView {
                    id: BackendId(i as u32),
                    addr,
                    port: 0,
                    weight,
                    last_weight: weight,
                })
                .collect();
            pool.set(view);
        }
    }

    /// The healthy backends of name `index` (IPv4 then IPv6).
    pub fn backends(&self, index: usize) -> Vec<(IpAddr, u32)> {
        self.names
            .get(index)
            .map(|e| {
                e.pools[0]
                    .view()
                    .iter()
                    .chain(e.pools[1].view().iter())
                    .map(|b| (b.addr, b.weight))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Answers `query` from `client`, received on `local` over `transport`. `None` when the
    /// query is dropped (unparseable, or not a query).
    pub fn respond(
        &mut self,
        query: &[u8],
        client: IpAddr,
        local: IpAddr,
        transport: Transport,
        now: Time,
    ) -> (Option<Vec<u8>>, Outcome) {
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => return (formerr(query), formerr_outcome(query)),
        };
        if request.metadata.message_type != MessageType::Query {
            return (None, Outcome::Dropped);
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        // RFC 7871: the client subnet stands for the client when the query carries one (a
        // source prefix of 0 asks for no tailoring: the sender's address is used); the answer
        // echoes it with the scope it depends on.
        let mut client = client;
        let subnet = request
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => Some(*s),
                _ => None,
            });
        let max_udp = match &request.edns {
            Some(edns) => {
                let mut answer_edns = Edns::new();
                answer_edns.set_max_payload(1232);
                if let Some(s) = subnet {
                    let tailored = !self.networks.is_empty() || self.hashes_client;
                    if s.source_prefix() > 0 {
                        client = masked(s.addr(), s.source_prefix());
                    }
                    let scope = if tailored { s.source_prefix() } else { 0 };
                    answer_edns
                        .options_mut()
                        .insert(EdnsOption::Subnet(ClientSubnet::new(
                            s.addr(),
                            s.source_prefix(),
                            scope,
                        )));
                }
                response.set_edns(answer_edns);
                usize::from(edns.max_payload()).max(UDP_PLAIN_MAX)
            }
            None => UDP_PLAIN_MAX,
        };
        let mut name_index = None;
        let rcode = if request.metadata.op_code != OpCode::Query {
            ResponseCode::NotImp
        } else if request.edns.as_ref().is_some_and(|e| e.version() != 0) {
            // RFC 6891 §6.1.3: BADVERS, an extended rcode carried in the OPT.
            ResponseCode::BADVERS
        } else if request.queries.len() != 1 {
            ResponseCode::FormErr
        } else {
            let q = &request.queries[0];
            response.add_query(q.clone());
            let qname = q.name().to_lowercase();
            if q.query_class() != DNSClass::IN || !self.zone.zone_of(&qname) {
                ResponseCode::Refused
            } else {
                response.metadata.authoritative = true;
                match self.names.iter().position(|e| e.name == qname) {
                    None => {
                        response.add_authority(self.soa.clone());
                        if qname == self.zone {
                            // The apex exists (it holds the SOA).
                            if q.query_type() == RecordType::SOA {
                                response.authorities.clear();
                                response.add_answer(self.soa.clone());
                            }
                            ResponseCode::NoError
                        } else {
                            ResponseCode::NXDomain
                        }
                    }
                    Some(i) => {
                        name_index = Some(i);
                        self.answer(i, q.query_type(), client, local, now, &mut response)
                    }
                }
            }
        };
        set_rcode(&mut response, rcode);
        let mut bytes = match response.to_vec() {
            Ok(b) => b,
            Err(_) => return (None, Outcome::Dropped),
        };
        let mut truncated = false;
        if transport == Transport::Udp && bytes.len() > max_udp {
            let mut short = response.truncate();
            short.metadata.id = response.metadata.id;
            short.metadata.message_type = MessageType::Response;
            match short.to_vec() {
                Ok(b) => bytes = b,
                Err(_) => return (None, Outcome::Dropped),
            }
            truncated = true;
        }
        (
            Some(bytes),
            Outcome::Answered {
                name: name_index,
                qtype: (request.queries.len() == 1).then(|| request.queries[0].query_type()),
                rcode: u16::from(rcode),
                truncated,
            },
        )
    }

    /// Fills the answer for configured name `i`; returns the rcode.
    fn answer(
        &mut self,
        i: usize,
        qtype: RecordType,
        client: IpAddr,
        local: IpAddr,
        now: Time,
        response: &mut Message,
    ) -> ResponseCode {
        let soa = self.soa.clone();
        // The most specific client network of the client.
        let network = self
            .networks
            .iter()
            .enumerate()
            .filter(|(_, n)| n.contains(client))
            .max_by_key(|(_, n)| n.len)
            .map(|(k, _)| k);
        let entry = &mut self.names[i];
        if !entry.pools[0].live() && !entry.pools[1].live() {
            return ResponseCode::ServFail;
        }
        let family = match qtype {
            RecordType::A => 0,
            RecordType::AAAA => 1,
            _ => {
                response.add_authority(soa);
                return ResponseCode::NoError;
            }
        };
        // The client network's preferred backends while one is available, else every backend.
        let slot = match network {
            Some(k) if entry.pools[2 * (k + 1) + family].live() => k + 1,
            _ => 0,
        };
        let pool = &mut entry.pools[2 * slot + family];
        let flow = Flow {
            proto: 17,
            src: client,
            sport: 0,
            dst: local,
            dport: 53,
        };
        let Some(first) = pool.pick(&flow, now) else {
            // No backend of this family (or all weight 0): NODATA.
            response.add_authority(soa);
            return ResponseCode::NoError;
        };
        let backends = pool.view();
        let n = backends.len();
        let mut picked = 0;
        for k in 0..n {
            if picked == entry.answers {
                break;
            }
            let b = &backends[(first + k) % n];
            if b.weight == 0 {
                continue;
            }
            let rdata = match b.addr {
                IpAddr::V4(a) => RData::A(A(a)),
                IpAddr::V6(a) => RData::AAAA(AAAA(a)),
            };
            response.add_answer(Record::from_rdata(entry.name.clone(), entry.ttl, rdata));
            picked += 1;
        }
        ResponseCode::NoError
    }
}

/// `a` with the bits past `len` cleared.
fn masked(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v) & m).into())
        }
        IpAddr::V6(v) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v) & m).into())
        }
    }
}

/// Sets `rcode`; an extended one needs an OPT, where hickory writes its high bits.
fn set_rcode(response: &mut Message, rcode: ResponseCode) {
    response.metadata.response_code = rcode;
    if rcode.high() > 0 && response.edns.is_none() {
        response.set_edns(Edns::new());
    }
}

/// A FORMERR answer to an unparseable message whose header is readable and says "query";
/// nothing otherwise (RFC 1035 §4.1.1: the header is all that can be echoed).
fn formerr(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let opcode = OpCode::from_u8((query[2] >> 3) & 0x0f);
    Message::error_msg(id, opcode, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

fn formerr_outcome(query: &[u8]) -> Outcome {
    if formerr(query).is_some() {
        Outcome::Answered {
            name: None,
            qtype: None,
            rcode: u16::from(ResponseCode::FormErr),
            truncated: false,
        }
    } else {
        Outcome::Dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn responder(scheduler: &str, answers: usize) -> Responder {
        let mut r = Responder::new("lb.example", "ns1.lb.example", 30).unwrap();
        let i = r
            .add_name("www.lb.example", 20, answers, scheduler)
            .unwrap();
        r.set_backends(
            i,
            &[
                (IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)), 3),
                (IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)), 1),
                (IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1)), 1),
            ],
        );
        r
    }

    fn ask(r: &mut Responder, q: &[u8], t: Transport) -> (Message, Outcome) {
        let (bytes, outcome) = r.respond(q, CLIENT, LOCAL, t, Time(0));
        (
            Message::from_vec(&bytes.expect("an answer")).unwrap(),
            outcome,
        )
    }

    #[test]
    fn a_and_aaaa_answers_are_authoritative_with_the_ttl() {
        let mut r = responder("wrr", 1);
        let (m, o) = ask(
            &mut r,
            &query("WWW.lb.example.", RecordType::A, None),
            Transport::Udp,
        );
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].ttl, 20);
        assert!(matches!(m.answers[0].data, RData::A(_)));
        assert_eq!(
            o,
            Outcome::Answered {
                name: Some(0),
                qtype: Some(RecordType::A),
                rcode: 0,
                truncated: false
            }
        );
        let (m, _) = ask(
            &mut r,
            &query("www.lb.example.", RecordType::AAAA, None),
            Transport::Tcp,
        );
        assert_eq!(
            m.answers[0].data,
            RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1)))
        );
    }

    #[test]
    fn wrr_weights_hold_over_many_queries() {
        let mut r = responder("wrr", 1);
        let q = query("www.lb.example.", RecordType::A, None);
        let mut first = 0;
        for _ in 0..400 {
            let (m, _) = ask(&mut r, &q, Transport::Udp);
            if m.answers[0].data == RData::A(A(Ipv4Addr::new(198, 18, 1, 1))) {
                first += 1;
            }
        }
        assert_eq!(first, 300, "3:1 weights over 400 answers");
    }

    #[test]
    fn answer_count_gives_distinct_addresses_of_the_family() {
        let mut r = responder("rr", 5);
        let (m, _) = ask(
            &mut r,
            &query("www.lb.example.", RecordType::A, None),
            Transport::Udp,
        );
        assert_eq!(m.answers.len(), 2);
        assert_ne!(m.answers[0].data, m.answers[1].data);
    }

    #[test]
    fn sh_gives_one_client_the_same_first_record() {
        let mut r = responder("sh", 1);
        let q = query("www.lb.example.", RecordType::A, None);
        let (first, _) = ask(&mut r, &q, Transport::Udp);
        for _ in 0..20 {
            let (m, _) = ask(&mut r, &q, Transport::Udp);
            assert_eq!(m.answers[0].data, first.answers[0].data);
        }
    }

    #[test]
    fn nxdomain_under_the_zone_carries_the_soa() {
        let mut r = responder("wrr", 1);
        let (m, o) = ask(
            &mut r,
            &query("nope.lb.example.", RecordType::A, None),
            Transport::Udp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(m.authorities[0].ttl, 30);
        assert_eq!(
            o,
            Outcome::Answered {
                name: None,
                qtype: Some(RecordType::A),
                rcode: 3,
                truncated: false
            }
        );
    }

    #[test]
    fn refused_outside_the_zone() {
        let mut r = responder("wrr", 1);
        let (m, _) = ask(
            &mut r,
            &query("example.org.", RecordType::A, None),
            Transport::Udp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn other_types_get_nodata_with_the_soa() {
        let mut r = responder("wrr", 1);
        let (m, _) = ask(
            &mut r,
            &query("www.lb.example.", RecordType::MX, None),
            Transport::Udp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        let (m, _) = ask(
            &mut r,
            &query("lb.example.", RecordType::SOA, None),
            Transport::Udp,
        );
        assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn servfail_when_no_backend_is_healthy() {
        let mut r = responder("wrr", 1);
        r.set_backends(0, &[]);
        let (m, o) = ask(
            &mut r,
            &query("www.lb.example.", RecordType::A, None),
            Transport::Udp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.answers.is_empty());
        assert!(matches!(o, Outcome::Answered { rcode: 2, .. }));
        // A backend back: answers again.
        r.set_backends(0, &[(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 7)), 1)]);
        let (m, _) = ask(
            &mut r,
            &query("www.lb.example.", RecordType::A, None),
            Transport::Udp,
        );
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(198, 18, 1, 7))));
    }

    fn many(r: &mut Responder) {
        let addrs: Vec<(IpAddr, u32)> = (1..=60)
            .map(|i| (IpAddr::V4(Ipv4Addr::new(198, 18, 2, i)), 1))
            .collect();
        r.set_backends(0, &addrs);
    }

    #[test]
    fn udp_over_512_is_truncated_and_tcp_is_not() {
        let mut r = responder("rr", 60);
        many(&mut r);
        let q = query("www.lb.example.", RecordType::A, None);
        let (bytes, o) = r.respond(&q, CLIENT, LOCAL, Transport::Udp, Time(0));
        let bytes = bytes.unwrap();
        assert!(bytes.len() <= UDP_PLAIN_MAX);
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.id, 0x1234);
        assert!(matches!(
            o,
            Outcome::Answered {
                truncated: true,
                ..
            }
        ));
        let (m, _) = ask(&mut r, &q, Transport::Tcp);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
    }

    #[test]
    fn edns_payload_size_bounds_the_udp_answer() {
        let mut r = responder("rr", 60);
        many(&mut r);
        let (m, _) = ask(
            &mut r,
            &query("www.lb.example.", RecordType::A, Some(4096)),
            Transport::Udp,
        );
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        assert!(m.edns.is_some(), "an OPT is answered with an OPT");
    }

    #[test]
    fn malformed_queries_get_formerr_or_are_dropped_never_a_panic() {
        let mut r = responder("wrr", 1);
        // Header of a query, then garbage for the question.
        let mut q = query("www.lb.example.", RecordType::A, None);
        q.truncate(15);
        let (bytes, o) = r.respond(&q, CLIENT, LOCAL, Transport::Udp, Time(0));
        let m = Message::from_vec(&bytes.unwrap()).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, 0x1234);
        assert!(matches!(o, Outcome::Answered { rcode: 1, .. }));
        // Too short for a header, or a response: dropped.
        assert_eq!(
            r.respond(&[1, 2, 3], CLIENT, LOCAL, Transport::Udp, Time(0))
                .1,
            Outcome::Dropped
        );
        let mut resp = query("www.lb.example.", RecordType::A, None);
        resp[2] |= 0x80;
        assert_eq!(
            r.respond(&resp, CLIENT, LOCAL, Transport::Udp, Time(0)).1,
            Outcome::Dropped
        );
        // Every prefix and a sweep of one-byte corruptions: no panic.
        let good = query("www.lb.example.", RecordType::A, Some(1232));
        for len in 0..good.len() {
            let _ = r.respond(&good[..len], CLIENT, LOCAL, Transport::Udp, Time(0));
        }
        for i in 0..good.len() {
            for v in [0u8, 0x3f, 0xc0, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = r.respond(&b, CLIENT, LOCAL, Transport::Udp, Time(0));
            }
        }
    }

    #[test]
    fn two_questions_are_formerr() {
        let mut r = responder("wrr", 1);
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("www.lb.example.").unwrap(),
            RecordType::A,
        ));
        m.add_query(Query::query(
            Name::from_ascii("www.lb.example.").unwrap(),
            RecordType::AAAA,
        ));
        let (m, _) = ask(&mut r, &m.to_vec().unwrap(), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }

    fn ecs_query(name: &str, subnet: Option<(IpAddr, u8)>) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let mut e = Edns::new();
        if let Some((a, len)) = subnet {
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(a, len, 0)));
        }
        m.set_edns(e);
        m.to_vec().unwrap()
    }

    fn networked() -> Responder {
        let mut r = Responder::new("lb.example", "ns1.lb.example", 30).unwrap();
        r.set_client_networks(vec![
            ClientNetwork {
                prefix: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)),
                len: 24,
                prefer: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2))],
            },
            ClientNetwork {
                prefix: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)),
                len: 16,
                prefer: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 1, 3))],
            },
        ]);
        r.add_name("www.lb.example", 20, 1, "wrr").unwrap();
        r.set_backends(
            0,
            &[
                (IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)), 1),
                (IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)), 1),
                (IpAddr::V4(Ipv4Addr::new(198, 18, 1, 3)), 1),
            ],
        );
        r
    }

    fn first_a(r: &mut Responder, q: &[u8], client: IpAddr) -> (RData, Message) {
        let (b, _) = r.respond(q, client, LOCAL, Transport::Udp, Time(0));
        let m = Message::from_vec(&b.unwrap()).unwrap();
        (m.answers[0].data.clone(), m)
    }

    #[test]
    fn client_networks_prefer_their_backends_by_source_or_client_subnet() {
        let mut r = networked();
        let near = RData::A(A(Ipv4Addr::new(198, 18, 1, 3)));
        let far = RData::A(A(Ipv4Addr::new(198, 18, 1, 2)));
        // CLIENT (198.18.0.9) is in 198.18.0.0/16: always .3.
        let q = query("www.lb.example.", RecordType::A, None);
        for _ in 0..5 {
            assert_eq!(first_a(&mut r, &q, CLIENT).0, near);
        }
        // The same sender with a client subnet in 203.0.113.0/24: .2, the subnet echoed with
        // its scope.
        let q = ecs_query(
            "www.lb.example.",
            Some((IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77)), 24)),
        );
        for _ in 0..5 {
            let (a, m) = first_a(&mut r, &q, CLIENT);
            assert_eq!(a, far);
            match m.edns.as_ref().unwrap().option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => {
                    // On the wire the address carries only its source prefix.
                    assert_eq!(s.addr(), IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)));
                    assert_eq!((s.source_prefix(), s.scope_prefix()), (24, 24));
                }
                other => panic!("no client subnet echoed: {other:?}"),
            }
        }
        // A client in no network: all three in turn.
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let q = query("www.lb.example.", RecordType::A, None);
        let mut seen: Vec<String> = (0..6)
            .map(|_| format!("{:?}", first_a(&mut r, &q, other).0))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3);
        // The preferred backend down: the network's clients get the others.
        r.set_backends(
            0,
            &[
                (IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)), 1),
                (IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)), 1),
            ],
        );
        let mut seen: Vec<String> = (0..4)
            .map(|_| format!("{:?}", first_a(&mut r, &q, CLIENT).0))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn client_subnet_scope_is_zero_when_the_answer_does_not_depend_on_it() {
        let mut r = responder("wrr", 1);
        let q = ecs_query(
            "www.lb.example.",
            Some((IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24)),
        );
        let (_, m) = first_a(&mut r, &q, CLIENT);
        match m.edns.as_ref().unwrap().option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => assert_eq!(s.scope_prefix(), 0),
            other => panic!("no client subnet echoed: {other:?}"),
        }
    }

    #[test]
    fn config_errors() {
        let mut r = Responder::new("lb.example", "ns1.lb.example", 30).unwrap();
        assert!(matches!(
            r.add_name("www.lb.example", 20, 1, "wlc"),
            Err(DnsConfigError::Scheduler(_))
        ));
        assert!(matches!(
            r.add_name("www.example.org", 20, 1, "wrr"),
            Err(DnsConfigError::OutsideZone { .. })
        ));
    }
}
