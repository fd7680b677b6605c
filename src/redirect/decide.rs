//! The decision of xvs's HTTP redirect listener, sans I/O: a request's target, the client's
//! address, the available backends and `now` in, the response (status, `Location`, body) out.
//!
//! Behaviour follows RFC 9110: each request is answered with the configured redirect status
//! (302 Found, §15.4.3, or 307 Temporary Redirect, §15.4.8, which keeps the method and body) and
//! a `Location` (§10.2.2) made of the configured scheme, the chosen backend's host (its address,
//! or a configured name) and port (the backend's, or a configured one; left out when it is the
//! scheme's default, RFC 3986 §6.2.3) and the request's own path and query, kept byte for byte.
//! A target with no path to keep (authority-form, asterisk-form, RFC 9112 §3.2.3–3.2.4) or one
//! that is not a URI gets 400 Bad Request (§15.5.1); 503 Service Unavailable (§15.6.4) answers
//! when no backend is available. The body is a one-line text note (§15.4: "the server SHOULD
//! generate a short hypertext note"), the same for HEAD: the HTTP layer (hyper) sends its
//! length and not the body, as §9.3.2 and §8.6 ask.
//!
//! The backend is chosen by the `crate::balance` pool the DNS responder uses (the xvs scheduler
//! suite, rr/wrr/sh/mh, over the service's available backends and their effective weights), for
//! a flow from the client's address (port 0) to the listener. With `persistence` set, a
//! client is sent to the backend it got last while that backend is available and its entry,
//! refreshed on every request, is younger than the timeout: the persistence template of
//! IPVS's `ip_vs_sched_persist` by client address, without a netmask. The table holds at most
//! [`PERSIST_MAX`] clients; past that (expired entries purged first) a request is answered
//! without being remembered and counted.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use xvs_schedulers::{BackendId, BackendView, Flow, Time};

use crate::balance::{NotStateless, Pool};

/// Clients remembered at most for persistence.
pub const PERSIST_MAX: usize = 65_536;

/// The scheme of the redirect URLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// How the redirects are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// 302 or 307.
    pub code: u16,
    pub scheme: Scheme,
    /// The port of every redirect URL; `None`: the backend's port.
    pub port: Option<u16>,
    /// Host names of backend addresses; an address not listed is its own host.
    pub hosts: Vec<(IpAddr, String)>,
    /// Persistence by client address, seconds; 0: none.
    pub persistence: u32,
}

/// What the decision was, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent to this backend (address, port).
    Redirected(IpAddr, u16),
    /// 400: the target has no path to keep.
    BadRequest,
    /// 503: no backend available.
    Unavailable,
}

/// One response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The `Location` header (redirects only).
    pub location: Option<String>,
    /// A `text/plain` body (for HEAD too: the HTTP layer sends its length, not the body).
    pub body: String,
    pub outcome: Outcome,
}

/// The counters of one listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests answered (redirect, 400 or 503), those hyper refused as malformed included.
    pub requests: u64,
    /// Redirects by backend (address, port).
    pub redirects: BTreeMap<(IpAddr, u16), u64>,
    /// 400 answers: a target without a path here, or a request hyper could not parse.
    pub bad_requests: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Redirects not remembered for persistence because the table was full.
    pub persistence_full: u64,
}

/// The redirect decision of one `[[redirect]]` entry.
#[derive(Debug)]
pub struct Redirector {
    rules: Rules,
    pool: Pool,
    /// Client → (backend address, port, expiry).
    persist: HashMap<IpAddr, (IpAddr, u16, Time)>,
    counters: Counters,
}

impl Redirector {
    /// A redirector choosing with `scheduler` (one of rr, wrr, sh, mh), with no backend yet.
    pub fn new(rules: Rules, scheduler: &str) -> Result<Redirector, NotStateless> {
        Ok(Redirector {
            rules,
            pool: Pool::new(scheduler)?,
            persist: HashMap::new(),
            counters: Counters::default(),
        })
    }

    /// Sets the available backends (address, port, weight); the scheduler is re-initialised
    /// only when they changed.
    pub fn set_backends(&mut self, backends: &[(IpAddr, u16, u32)]) {
        let view = backends
            .iter()
            .enumerate()
            .map(|(i, &(addr, port, weight))| BackendView {
                id: BackendId(i as u32),
                addr,
                port,
                weight,
                last_weight: weight,
            })
            .collect();
        self.pool.set(view);
    }

    /// The backends now (address, port, weight).
    pub fn backends(&self) -> Vec<(IpAddr, u16, u32)> {
        self.pool
            .view()
            .iter()
            .map(|b| (b.addr, b.port, b.weight))
            .collect()
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Clients remembered for persistence (expired entries included until purged).
    pub fn persistent_clients(&self) -> usize {
        self.persist.len()
    }

    /// Counts a request the HTTP library answered with 400 itself (malformed).
    pub fn count_malformed(&mut self) {
        self.counters.requests += 1;
        self.counters.bad_requests += 1;
    }

    /// The URL base (scheme, host, port) of a backend.
    pub fn url_base(&self, addr: IpAddr, port: u16) -> String {
        let host = match self.rules.hosts.iter().find(|(a, _)| *a == addr) {
            Some((_, name)) => name.clone(),
            None => match addr {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}]"),
            },
        };
        let port = self.rules.port.unwrap_or(port);
        let scheme = self.rules.scheme;
        if port == 0 || port == scheme.default_port() {
            format!("{}://{host}", scheme.as_str())
        } else {
            format!("{}://{host}:{port}", scheme.as_str())
        }
    }

    /// Answers a request for `target` (the request line's target) from `client`, received on
    /// `local`. The answer does not depend on the method: 302 and 307 redirect every method
    /// (307 tells the client to keep it).
    pub fn respond(&mut self, target: &str, client: IpAddr, local: SocketAddr, now: Time) -> Reply {
        self.counters.requests += 1;
        let Some(path) = path_and_query(target) else {
            self.counters.bad_requests += 1;
            return Reply {
                status: 400,
                location: None,
                body: "bad request: the target has no path to redirect\n".into(),
                outcome: Outcome::BadRequest,
            };
        };
        let Some((addr, port)) = self.choose(client, local, now) else {
            self.counters.unavailable += 1;
            return Reply {
                status: 503,
                location: None,
                body: "no backend available\n".into(),
                outcome: Outcome::Unavailable,
            };
        };
        *self.counters.redirects.entry((addr, port)).or_insert(0) += 1;
        let location = format!("{}{path}", self.url_base(addr, port));
        Reply {
            status: self.rules.code,
            body: format!("redirected to {location}\n"),
            location: Some(location),
            outcome: Outcome::Redirected(addr, port),
        }
    }

    /// The backend for `client`: its persistent one while available, else the scheduler's.
    fn choose(&mut self, client: IpAddr, local: SocketAddr, now: Time) -> Option<(IpAddr, u16)> {
        let timeout = Time::from_secs(u64::from(self.rules.persistence));
        if self.rules.persistence > 0 {
            if let Some(&(addr, port, expiry)) = self.persist.get(&client) {
                let available = self
                    .pool
                    .view()
                    .iter()
                    .any(|b| b.addr == addr && b.port == port && b.weight > 0);
                if expiry > now && available {
                    self.persist
                        .insert(client, (addr, port, Time(now.0.saturating_add(timeout.0))));
                    return Some((addr, port));
                }
            }
        }
        let flow = Flow {
            proto: 6,
            src: client,
            sport: 0,
            dst: local.ip(),
            dport: local.port(),
        };
        let i = self.pool.pick(&flow, now)?;
        let b = self.pool.view().get(i)?;
        let (addr, port) = (b.addr, b.port);
        if self.rules.persistence > 0 {
            if self.persist.len() >= PERSIST_MAX && !self.persist.contains_key(&client) {
                self.persist.retain(|_, e| e.2 > now);
            }
            if self.persist.len() < PERSIST_MAX || self.persist.contains_key(&client) {
                self.persist
                    .insert(client, (addr, port, Time(now.0.saturating_add(timeout.0))));
            } else {
                self.counters.persistence_full += 1;
            }
        }
        Some((addr, port))
    }
}

/// The path and query of a request target in origin-form (`/p?q`) or absolute-form
/// (`http://h/p?q`, path `/` when empty); `None` for other forms and for what is not a URI.
pub fn path_and_query(target: &str) -> Option<String> {
    if target.starts_with('/') {
        // Origin-form: kept as sent once it parses as one.
        let uri: http::Uri = target.parse().ok()?;
        return uri.path_and_query().map(|p| p.as_str().to_string());
    }
    let uri: http::Uri = target.parse().ok()?;
    uri.scheme()?;
    Some(match uri.path_and_query() {
        Some(p) if p.as_str().starts_with('/') => p.as_str().to_string(),
        Some(p) => format!("/{}", p.as_str()),
        None => "/".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
    const B1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1));
    const B2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2));

    fn local() -> SocketAddr {
        "198.18.0.1:80".parse().unwrap()
    }

    fn rules(persistence: u32) -> Rules {
        Rules {
            code: 302,
            scheme: Scheme::Http,
            port: None,
            hosts: Vec::new(),
            persistence,
        }
    }

    fn redirector(scheduler: &str, persistence: u32) -> Redirector {
        let mut r = Redirector::new(rules(persistence), scheduler).unwrap();
        r.set_backends(&[(B1, 8080, 3), (B2, 8080, 1)]);
        r
    }

    fn client(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 2, i))
    }

    #[test]
    fn redirects_keep_path_and_query() {
        let mut r = redirector("rr", 0);
        let a = r.respond("/a/b?x=1&y=%20", CLIENT, local(), Time(0));
        assert_eq!(a.status, 302);
        assert_eq!(
            a.location.as_deref(),
            Some("http://198.18.1.1:8080/a/b?x=1&y=%20")
        );
        assert_eq!(
            a.body,
            "redirected to http://198.18.1.1:8080/a/b?x=1&y=%20\n"
        );
        let b = r.respond("http://lb.example/q?z", CLIENT, local(), Time(0));
        assert_eq!(b.location.as_deref(), Some("http://198.18.1.2:8080/q?z"));
        assert_eq!(b.body, "redirected to http://198.18.1.2:8080/q?z\n");
        let c = r.respond("http://lb.example", CLIENT, local(), Time(0));
        assert_eq!(c.location.as_deref(), Some("http://198.18.1.1:8080/"));
        assert_eq!(c.outcome, Outcome::Redirected(B1, 8080));
    }

    #[test]
    fn wrr_spreads_by_weight() {
        let mut r = redirector("wrr", 0);
        for i in 0..40 {
            r.respond("/", client(i), local(), Time(0));
        }
        let c = r.counters();
        assert_eq!(c.redirects.get(&(B1, 8080)), Some(&30));
        assert_eq!(c.redirects.get(&(B2, 8080)), Some(&10));
        assert_eq!(c.requests, 40);
    }

    #[test]
    fn configured_scheme_host_port_and_code() {
        let mut r = Redirector::new(
            Rules {
                code: 307,
                scheme: Scheme::Https,
                port: Some(443),
                hosts: vec![(B1, "www1.lb.example".into())],
                persistence: 0,
            },
            "rr",
        )
        .unwrap();
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1));
        r.set_backends(&[(B1, 80, 1), (v6, 80, 1)]);
        let a = r.respond("/form", CLIENT, local(), Time(0));
        assert_eq!(a.status, 307);
        assert_eq!(a.location.as_deref(), Some("https://www1.lb.example/form"));
        let b = r.respond("/form", CLIENT, local(), Time(0));
        assert_eq!(b.location.as_deref(), Some("https://[2001:2::1]/form"));
        assert_eq!(r.url_base(B2, 8443), "https://198.18.1.2");
    }

    #[test]
    fn bad_targets_get_400() {
        let mut r = redirector("rr", 0);
        for t in [
            "*",
            "lb.example:443",
            "",
            "/a b",
            "http://",
            "no-scheme/x",
            "/\x7f",
        ] {
            let a = r.respond(t, CLIENT, local(), Time(0));
            assert_eq!(a.status, 400, "{t:?}");
            assert_eq!(a.outcome, Outcome::BadRequest);
            assert_eq!(a.location, None);
        }
        assert_eq!(r.counters().bad_requests, 7);
        assert!(r.counters().redirects.is_empty());
        r.count_malformed();
        assert_eq!(r.counters().bad_requests, 8);
        assert_eq!(r.counters().requests, 8);
    }

    #[test]
    fn no_backend_gets_503() {
        let mut r = redirector("wrr", 0);
        r.set_backends(&[(B1, 8080, 0)]);
        let a = r.respond("/", CLIENT, local(), Time(0));
        assert_eq!((a.status, a.outcome), (503, Outcome::Unavailable));
        r.set_backends(&[]);
        assert_eq!(r.respond("/", CLIENT, local(), Time(0)).status, 503);
        assert_eq!(r.counters().unavailable, 2);
    }

    #[test]
    fn persistence_keeps_a_client_until_timeout_or_failure() {
        let mut r = redirector("rr", 10);
        let first = r.respond("/", CLIENT, local(), Time(0)).outcome;
        for s in 1..=5 {
            let o = r.respond("/", CLIENT, local(), Time::from_secs(s)).outcome;
            assert_eq!(o, first);
        }
        // Another client moves the rr cursor; CLIENT stays.
        r.respond("/", client(1), local(), Time::from_secs(5));
        // Refreshed at 5 s: still there at 14 s; refreshed then, expired at 30 s (a new pick).
        assert_eq!(
            r.respond("/", CLIENT, local(), Time::from_secs(14)).outcome,
            first
        );
        let later = r.respond("/", CLIENT, local(), Time::from_secs(30)).outcome;
        assert_eq!(r.persistent_clients(), 2);
        // The persistent backend fails: the client is moved and stays on the new one.
        let Outcome::Redirected(addr, port) = later else {
            panic!("{later:?}")
        };
        let other = if addr == B1 { B2 } else { B1 };
        r.set_backends(&[(other, 8080, 1)]);
        let moved = r.respond("/", CLIENT, local(), Time::from_secs(31)).outcome;
        assert_eq!(moved, Outcome::Redirected(other, 8080));
        r.set_backends(&[(B1, 8080, 3), (B2, 8080, 1)]);
        assert_eq!(
            r.respond("/", CLIENT, local(), Time::from_secs(32)).outcome,
            moved
        );
        assert_ne!((addr, port), (other, 8080));
    }

    #[test]
    fn without_persistence_rr_alternates() {
        let mut r = redirector("rr", 0);
        let a = r.respond("/", CLIENT, local(), Time(0)).outcome;
        let b = r.respond("/", CLIENT, local(), Time(0)).outcome;
        assert_ne!(a, b);
        assert_eq!(r.persistent_clients(), 0);
    }

    #[test]
    fn persistence_table_is_bounded() {
        let mut r = redirector("rr", 100);
        for i in 0..PERSIST_MAX as u32 + 5 {
            let c = IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)));
            assert_eq!(r.respond("/", c, local(), Time(0)).status, 302);
        }
        assert_eq!(r.persistent_clients(), PERSIST_MAX);
        assert_eq!(r.counters().persistence_full, 5);
        // Once the entries expire, new clients are remembered again.
        r.respond("/", CLIENT, local(), Time::from_secs(200));
        assert_eq!(r.persistent_clients(), 1);
    }
}
