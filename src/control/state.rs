//! The desired state with ipvsadm semantics: what `-A/-E/-D`, `-a/-e/-d`, `-C` and `--set` do
//! to the services and backends (`ip_vs_ctl.c`: `ip_vs_add_service`, `ip_vs_edit_service`,
//! `ip_vs_add_dest`, `ip_vs_edit_dest`, `ip_vs_del_dest`, `ip_vs_flush`, `ip_vs_set_timeout`;
//! ../shared/IPVS.md §0–§1, §7).
//!
//! * `Service.backends` is in add order; IPVS's list order is the reverse (a new backend is
//!   inserted at the head). Edits never move a backend; delete + add moves it to the head.
//! * `-E` replaces scheduler, flags, persistence, one-packet, the SYN proxy and xvs's
//!   `--conn-rate` wholesale (no `-p` = not persistent; no `-s` = wlc, because ipvsadm fills in
//!   its default before asking the kernel; no `--conn-rate` = no limit).
//! * `-e` likewise replaces method, weight, thresholds and `--conn-rate` wholesale (ipvsadm
//!   sends a fresh destination with its defaults `-g -w 1` for whatever was not given).
//! * `--set tcp tcpfin udp`: 0 keeps the current value.
//! * `--source-rate RATE[/LEN4[/LEN6]]` (xvs): the per-source-prefix limit; prefix lengths not
//!   given are kept.
//!
//! Errors name the service and backend (`service TCP 198.18.0.100:80 already exists`) instead
//! of the kernel's errno texts ("Service already exists").

use std::net::IpAddr;

use xvs_forwarding::service::{Backend, Service, ServiceKey, PROTO_TCP, PROTO_UDP};
use xvs_forwarding::Method;
use xvs_schedulers::SchedulerError;

use crate::config::{Config, TimeoutSection};
use crate::sync::{DaemonConfig, Role};

/// Longest persistence / protocol timeout ipvsadm accepts (31 days).
pub const MAX_TIMEOUT: u32 = 86400 * 31;

/// Services, backends and protocol timeouts: what the director should be doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// In creation order.
    pub services: Vec<Service>,
    /// `ipvsadm --set tcp tcpfin udp`.
    pub timeouts: TimeoutSection,
    /// The connection sync daemons (`--start-daemon`): at most one master and one backup, in
    /// that order.
    pub daemons: Vec<DaemonConfig>,
    /// New connections per source prefix (`[defense] source_rate`, `--source-rate`).
    pub source_limit: SourceLimit,
}

/// The per-source-prefix new-connection limit: `rate` connections per second (director-wide,
/// 0: none) per IPv4 `/prefix_v4` and IPv6 `/prefix_v6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceLimit {
    pub rate: u32,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
}

impl Default for SourceLimit {
    fn default() -> Self {
        let d = xvs_forwarding::defense::DefenseConfig::default();
        SourceLimit {
            rate: d.source_rate,
            prefix_v4: d.source_prefix_v4,
            prefix_v6: d.source_prefix_v6,
        }
    }
}

/// An ipvsadm operation that cannot be applied to the desired state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("service {0} already exists")]
    ServiceExists(String),
    #[error("service {0} does not exist")]
    NoService(String),
    #[error("backend {backend} already exists in service {service}")]
    BackendExists { service: String, backend: String },
    #[error("service {service} has no backend {backend}")]
    NoBackend { service: String, backend: String },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("a {0} sync daemon is already running")]
    DaemonRunning(&'static str),
    #[error("no {0} sync daemon is running")]
    NoDaemon(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// `TCP 198.18.0.100:80`, `UDP [2001:db8::1]:53`, `FWM 7`, `FWM 7 IPv6`.
pub fn service_name(key: &ServiceKey) -> String {
    match *key {
        ServiceKey::Addr { proto, addr, port } => {
            format!("{} {}", proto_name(proto), addr_port(addr, port))
        }
        ServiceKey::Fwmark { mark, ipv6 } => {
            format!("FWM {mark}{}", if ipv6 { " IPv6" } else { "" })
        }
    }
}

/// ipvsadm's protocol names (`protocol_name`).
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "TCP",
        PROTO_UDP => "UDP",
        132 => "SCTP",
        _ => "unknown",
    }
}

/// `addr:port`, IPv6 in brackets (ipvsadm's `addrport_to_anyname` with `-n`).
pub fn addr_port(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn is_ipv6(key: &ServiceKey) -> bool {
    match *key {
        ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
        ServiceKey::Fwmark { ipv6, .. } => ipv6,
    }
}

impl DesiredState {
    /// The desired state a configuration file describes.
    pub fn from_config(cfg: &Config) -> DesiredState {
        DesiredState {
            services: cfg.services.clone(),
            timeouts: cfg.timeouts,
            daemons: cfg
                .sync
                .master
                .iter()
                .chain(cfg.sync.backup.iter())
                .cloned()
                .collect(),
            source_limit: SourceLimit {
                rate: cfg.defense.source_rate,
                prefix_v4: cfg.defense.source_prefix_v4,
                prefix_v6: cfg.defense.source_prefix_v6,
            },
        }
    }

    /// Put this state into a configuration (services, timeouts, sync daemons and the source
    /// limit; everything else kept).
    pub fn apply_to(&self, cfg: &mut Config) {
        cfg.services = self.services.clone();
        cfg.timeouts = self.timeouts;
        cfg.sync.master = self.daemon(Role::Master).cloned();
        cfg.sync.backup = self.daemon(Role::Backup).cloned();
        cfg.defense.source_rate = self.source_limit.rate;
        cfg.defense.source_prefix_v4 = self.source_limit.prefix_v4;
        cfg.defense.source_prefix_v6 = self.source_limit.prefix_v6;
    }

    /// `--source-rate RATE[/LEN4[/LEN6]]`: the rate, and the prefix lengths given (the others
    /// kept).
    pub fn set_source_limit(
        &mut self,
        rate: u32,
        prefix_v4: Option<u8>,
        prefix_v6: Option<u8>,
    ) -> Result<(), StateError> {
        if prefix_v4.is_some_and(|p| p > 32) || prefix_v6.is_some_and(|p| p > 128) {
            return Err(StateError::Invalid(
                "source prefix lengths are at most 32 (IPv4) and 128 (IPv6)".into(),
            ));
        }
        self.source_limit.rate = rate;
        if let Some(p) = prefix_v4 {
            self.source_limit.prefix_v4 = p;
        }
        if let Some(p) = prefix_v6 {
            self.source_limit.prefix_v6 = p;
        }
        Ok(())
    }

    /// The daemon of `role`, if one should run.
    pub fn daemon(&self, role: Role) -> Option<&DaemonConfig> {
        self.daemons.iter().find(|d| d.role == role)
    }

    /// `--start-daemon`: refused while a daemon of the same role runs (as the kernel's EEXIST).
    pub fn start_daemon(&mut self, d: DaemonConfig) -> Result<(), StateError> {
        if self.daemon(d.role).is_some() {
            return Err(StateError::DaemonRunning(d.role.as_str()));
        }
        self.daemons.push(d);
        self.daemons.sort_by_key(|d| d.role);
        Ok(())
    }

    /// `--stop-daemon`.
    pub fn stop_daemon(&mut self, role: Role) -> Result<(), StateError> {
        let before = self.daemons.len();
        self.daemons.retain(|d| d.role != role);
        if self.daemons.len() == before {
            return Err(StateError::NoDaemon(role.as_str()));
        }
        Ok(())
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.iter().find(|s| s.key == *key)
    }

    fn index(&self, key: &ServiceKey) -> Result<usize, StateError> {
        self.services
            .iter()
            .position(|s| s.key == *key)
            .ok_or_else(|| StateError::NoService(service_name(key)))
    }

    /// `-A`: `svc.backends` is ignored (a new service has none).
    pub fn add_service(&mut self, svc: Service) -> Result<(), StateError> {
        if self.service(&svc.key).is_some() {
            return Err(StateError::ServiceExists(service_name(&svc.key)));
        }
        check_service(&svc)?;
        self.services.push(Service {
            backends: Vec::new(),
            ..svc
        });
        Ok(())
    }

    /// `-E`: replaces scheduler, flags, persistence, one-packet, SYN proxy and connection rate;
    /// keeps the backends.
    pub fn edit_service(&mut self, svc: Service) -> Result<(), StateError> {
        let i = self.index(&svc.key)?;
        check_service(&svc)?;
        let s = &mut self.services[i];
        s.scheduler = svc.scheduler;
        s.sched_flags = svc.sched_flags;
        s.persistence = svc.persistence;
        s.one_packet = svc.one_packet;
        s.conn_rate = svc.conn_rate;
        if svc.synproxy {
            for b in &s.backends {
                check_synproxy_backend(&s.key, b)?;
            }
        }
        s.synproxy = svc.synproxy;
        Ok(())
    }

    /// `-D`.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), StateError> {
        let i = self.index(key)?;
        self.services.remove(i);
        Ok(())
    }

    /// `-a`: the new backend goes to the head of the IPVS list (the end of `backends`).
    pub fn add_backend(&mut self, key: &ServiceKey, b: Backend) -> Result<(), StateError> {
        let i = self.index(key)?;
        let s = &mut self.services[i];
        if s.backends
            .iter()
            .any(|x| x.addr == b.addr && x.port == b.port)
        {
            return Err(StateError::BackendExists {
                service: service_name(key),
                backend: addr_port(b.addr, b.port),
            });
        }
        check_backend(key, &b)?;
        if s.synproxy {
            check_synproxy_backend(key, &b)?;
        }
        s.backends.push(b);
        Ok(())
    }

    /// `-e`: replaces method, weight, thresholds and connection rate of the backend with this
    /// address and port.
    pub fn edit_backend(&mut self, key: &ServiceKey, b: Backend) -> Result<(), StateError> {
        let i = self.index(key)?;
        check_backend(key, &b)?;
        let s = &mut self.services[i];
        if s.synproxy {
            check_synproxy_backend(key, &b)?;
        }
        match s
            .backends
            .iter_mut()
            .find(|x| x.addr == b.addr && x.port == b.port)
        {
            Some(x) => {
                *x = b;
                Ok(())
            }
            None => Err(StateError::NoBackend {
                service: service_name(key),
                backend: addr_port(b.addr, b.port),
            }),
        }
    }

    /// `-d`.
    pub fn delete_backend(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Result<(), StateError> {
        let i = self.index(key)?;
        let s = &mut self.services[i];
        match s
            .backends
            .iter()
            .position(|x| x.addr == addr && x.port == port)
        {
            Some(j) => {
                s.backends.remove(j);
                Ok(())
            }
            None => Err(StateError::NoBackend {
                service: service_name(key),
                backend: addr_port(addr, port),
            }),
        }
    }

    /// `-C`: every service goes (timeouts stay, as in IPVS).
    pub fn clear(&mut self) {
        self.services.clear();
    }

    /// `--set tcp tcpfin udp`; 0 keeps the current value.
    pub fn set_timeouts(&mut self, tcp: u32, tcpfin: u32, udp: u32) {
        if tcp != 0 {
            self.timeouts.tcp = tcp;
        }
        if tcpfin != 0 {
            self.timeouts.tcpfin = tcpfin;
        }
        if udp != 0 {
            self.timeouts.udp = udp;
        }
    }

    /// The changes that turn `self` into `to`: service deletions, then per service of `to` its
    /// addition (followed by its backends in add order) or its edit and backend deletions,
    /// edits and additions, then the timeouts. Empty when both are the same. Used to tell what
    /// a reload replaces; `format::change_rule` prints a change as an ipvsadm rule.
    pub fn diff(&self, to: &DesiredState) -> Vec<Change> {
        let mut out = Vec::new();
        for s in &self.services {
            if to.service(&s.key).is_none() {
                out.push(Change::DeleteService(s.key));
            }
        }
        for t in &to.services {
            match self.service(&t.key) {
                None => {
                    out.push(Change::AddService(Service {
                        backends: Vec::new(),
                        ..t.clone()
                    }));
                    for b in &t.backends {
                        out.push(Change::AddBackend(t.key, b.clone()));
                    }
                }
                Some(s) => {
                    if s.scheduler != t.scheduler
                        || s.sched_flags != t.sched_flags
                        || s.persistence != t.persistence
                        || s.one_packet != t.one_packet
                        || s.synproxy != t.synproxy
                        || s.conn_rate != t.conn_rate
                    {
                        out.push(Change::EditService(Service {
                            backends: Vec::new(),
                            ..t.clone()
                        }));
                    }
                    for b in &s.backends {
                        if !t
                            .backends
                            .iter()
                            .any(|x| x.addr == b.addr && x.port == b.port)
                        {
                            out.push(Change::DeleteBackend(s.key, b.addr, b.port));
                        }
                    }
                    for b in &t.backends {
                        match s
                            .backends
                            .iter()
                            .find(|x| x.addr == b.addr && x.port == b.port)
                        {
                            None => out.push(Change::AddBackend(t.key, b.clone())),
                            Some(x) if x != b => out.push(Change::EditBackend(t.key, b.clone())),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        if self.timeouts != to.timeouts {
            let pick = |a: u32, b: u32| if a == b { 0 } else { b };
            out.push(Change::SetTimeouts {
                tcp: pick(self.timeouts.tcp, to.timeouts.tcp),
                tcpfin: pick(self.timeouts.tcpfin, to.timeouts.tcpfin),
                udp: pick(self.timeouts.udp, to.timeouts.udp),
            });
        }
        if self.source_limit != to.source_limit {
            out.push(Change::SetSourceLimit(to.source_limit));
        }
        for role in [Role::Master, Role::Backup] {
            let (a, b) = (self.daemon(role), to.daemon(role));
            if a != b {
                if a.is_some() {
                    out.push(Change::StopDaemon(role));
                }
                if let Some(d) = b {
                    out.push(Change::StartDaemon(d.clone()));
                }
            }
        }
        out
    }
}

/// One step between two desired states (the typed form of an ipvsadm rule, see
/// [`DesiredState::diff`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `-D`.
    DeleteService(ServiceKey),
    /// `-A` (the service without backends; its backends follow as `AddBackend`).
    AddService(Service),
    /// `-E` (scheduler, flags, persistence, one-packet; backends empty).
    EditService(Service),
    /// `-d`.
    DeleteBackend(ServiceKey, IpAddr, u16),
    /// `-a`.
    AddBackend(ServiceKey, Backend),
    /// `-e`.
    EditBackend(ServiceKey, Backend),
    /// `--set tcp tcpfin udp`, 0 for a value that stays.
    SetTimeouts { tcp: u32, tcpfin: u32, udp: u32 },
    /// `--source-rate RATE/LEN4/LEN6`.
    SetSourceLimit(SourceLimit),
    /// `--stop-daemon`.
    StopDaemon(Role),
    /// `--start-daemon`.
    StartDaemon(DaemonConfig),
}

fn check_service(svc: &Service) -> Result<(), StateError> {
    xvs_schedulers::new_scheduler(&svc.scheduler, &svc.sched_flags)?;
    if svc.one_packet
        && !matches!(
            svc.key,
            ServiceKey::Addr {
                proto: PROTO_UDP,
                ..
            } | ServiceKey::Fwmark { .. }
        )
    {
        return Err(StateError::Invalid(
            "one-packet scheduling (-o) is only for UDP and fwmark services".into(),
        ));
    }
    if svc.synproxy
        && !matches!(
            svc.key,
            ServiceKey::Addr {
                proto: PROTO_TCP,
                ..
            }
        )
    {
        return Err(StateError::Invalid(
            "the SYN proxy (-j) is only for TCP vip:port services".into(),
        ));
    }
    if let Some(p) = svc.persistence {
        if p.timeout == 0 || p.timeout > MAX_TIMEOUT {
            return Err(StateError::Invalid(format!(
                "persistence timeout {} is out of range 1..={MAX_TIMEOUT}",
                p.timeout
            )));
        }
        let max = if is_ipv6(&svc.key) { 128 } else { 32 };
        if p.prefix_len == 0 || p.prefix_len > max {
            return Err(StateError::Invalid(format!(
                "persistence netmask /{} is out of range 1..={max}",
                p.prefix_len
            )));
        }
    }
    Ok(())
}

/// A SYN-proxied service's backends must send their replies through the director.
fn check_synproxy_backend(key: &ServiceKey, b: &Backend) -> Result<(), StateError> {
    if b.method.replies_through_director() {
        return Ok(());
    }
    Err(StateError::Invalid(format!(
        "service {} uses the SYN proxy (-j): backend {} must be masquerading (-m) or fullnat",
        service_name(key),
        addr_port(b.addr, b.port)
    )))
}

fn check_backend(key: &ServiceKey, b: &Backend) -> Result<(), StateError> {
    if b.weight > 65535 {
        return Err(StateError::Invalid(format!(
            "weight {} is out of range 0..=65535",
            b.weight
        )));
    }
    if b.l_threshold > b.u_threshold {
        return Err(StateError::Invalid(format!(
            "lower threshold {} is above upper threshold {}",
            b.l_threshold, b.u_threshold
        )));
    }
    if b.addr.is_ipv6() != is_ipv6(key) && b.method != Method::Tunnel {
        return Err(StateError::Invalid(format!(
            "backend {} is not in the address family of service {} (only -i tunnel backends may differ)",
            addr_port(b.addr, b.port),
            service_name(key)
        )));
    }
    if let (Method::Dr | Method::Tunnel, ServiceKey::Addr { port, .. }) = (b.method, *key) {
        if b.port != port {
            return Err(StateError::Invalid(format!(
                "direct routing and tunnel backends keep the service port {port} (got {})",
                b.port
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xvs_forwarding::service::Persistence;
    use xvs_schedulers::SchedFlags;

    fn key(port: u16) -> ServiceKey {
        ServiceKey::Addr {
            proto: PROTO_TCP,
            addr: "198.18.0.100".parse().unwrap(),
            port,
        }
    }

    fn svc(port: u16, sched: &str) -> Service {
        Service {
            key: key(port),
            scheduler: sched.into(),
            sched_flags: SchedFlags::NONE,
            persistence: None,
            one_packet: false,
            synproxy: false,
            conn_rate: 0,
            backends: vec![],
        }
    }

    fn be(last: u8, weight: u32) -> Backend {
        Backend {
            addr: IpAddr::from([198, 19, 0, last]),
            port: 8080,
            weight,
            method: Method::Nat,
            u_threshold: 0,
            l_threshold: 0,
            conn_rate: 0,
        }
    }

    #[test]
    fn service_and_backend_lifecycle() {
        let mut st = DesiredState::default();
        st.add_service(svc(80, "rr")).unwrap();
        assert_eq!(
            st.add_service(svc(80, "wlc")).unwrap_err().to_string(),
            "service TCP 198.18.0.100:80 already exists"
        );
        st.add_backend(&key(80), be(1, 1)).unwrap();
        st.add_backend(&key(80), be(2, 1)).unwrap();
        assert_eq!(
            st.add_backend(&key(80), be(1, 5)).unwrap_err().to_string(),
            "backend 198.19.0.1:8080 already exists in service TCP 198.18.0.100:80"
        );
        // Edit keeps the position and replaces the backend wholesale.
        st.edit_backend(&key(80), be(1, 7)).unwrap();
        assert_eq!(st.services[0].backends[0].weight, 7);
        assert_eq!(
            st.services[0].backends[1].addr,
            IpAddr::from([198, 19, 0, 2])
        );
        // Delete + add moves it to the list head (end of add order).
        st.delete_backend(&key(80), IpAddr::from([198, 19, 0, 1]), 8080)
            .unwrap();
        st.add_backend(&key(80), be(1, 1)).unwrap();
        assert_eq!(
            st.services[0].backends[1].addr,
            IpAddr::from([198, 19, 0, 1])
        );
        assert_eq!(
            st.delete_backend(&key(80), IpAddr::from([198, 19, 0, 9]), 8080)
                .unwrap_err()
                .to_string(),
            "service TCP 198.18.0.100:80 has no backend 198.19.0.9:8080"
        );
        assert_eq!(
            st.add_backend(&key(81), be(1, 1)).unwrap_err().to_string(),
            "service TCP 198.18.0.100:81 does not exist"
        );
        // -E replaces flags wholesale but keeps the backends.
        let mut e = svc(80, "sh");
        e.persistence = Some(Persistence {
            timeout: 300,
            prefix_len: 24,
        });
        st.edit_service(e).unwrap();
        assert_eq!(st.services[0].scheduler, "sh");
        assert_eq!(st.services[0].backends.len(), 2);
        st.edit_service(svc(80, "sh")).unwrap();
        assert_eq!(st.services[0].persistence, None);
        st.delete_service(&key(80)).unwrap();
        assert!(st.services.is_empty());
        assert!(matches!(
            st.delete_service(&key(80)),
            Err(StateError::NoService(_))
        ));
    }

    #[test]
    fn invalid_operations_are_refused() {
        let mut st = DesiredState::default();
        assert!(matches!(
            st.add_service(svc(80, "nope")),
            Err(StateError::Scheduler(_))
        ));
        let mut o = svc(80, "rr");
        o.one_packet = true;
        assert!(st.add_service(o).is_err());
        st.add_service(svc(80, "rr")).unwrap();
        let mut b = be(1, 1);
        b.u_threshold = 5;
        b.l_threshold = 6;
        assert!(st.add_backend(&key(80), b).is_err());
        let mut b = be(1, 1);
        b.addr = "2001:db8::1".parse().unwrap();
        assert!(st.add_backend(&key(80), b.clone()).is_err());
        b.method = Method::Tunnel;
        b.port = 80;
        st.add_backend(&key(80), b).unwrap();
        let mut b = be(2, 1);
        b.method = Method::Dr;
        assert!(st.add_backend(&key(80), b).is_err(), "DR keeps the port");
        assert!(st.add_backend(&key(80), be(3, 65536)).is_err());
    }

    #[test]
    fn timeouts_zero_keeps() {
        let mut st = DesiredState::default();
        st.set_timeouts(0, 30, 0);
        assert_eq!(
            (st.timeouts.tcp, st.timeouts.tcpfin, st.timeouts.udp),
            (900, 30, 300)
        );
        st.clear();
    }

    #[test]
    fn diff_lists_what_changes() {
        let mut a = DesiredState::default();
        a.add_service(svc(80, "rr")).unwrap();
        a.add_backend(&key(80), be(1, 1)).unwrap();
        a.add_backend(&key(80), be(2, 1)).unwrap();
        a.add_service(svc(443, "rr")).unwrap();
        assert!(a.diff(&a).is_empty());
        let mut c = a.clone();
        c.delete_service(&key(80)).unwrap();
        c.add_service(svc(80, "rr")).unwrap();
        c.add_backend(&key(80), be(1, 1)).unwrap();
        assert_eq!(
            c.diff(&a),
            [Change::AddBackend(key(80), be(2, 1))],
            "typed changes"
        );
        let mut b = a.clone();
        b.delete_service(&key(443)).unwrap();
        b.edit_backend(&key(80), be(1, 3)).unwrap();
        b.delete_backend(&key(80), IpAddr::from([198, 19, 0, 2]), 8080)
            .unwrap();
        b.add_service(svc(81, "wlc")).unwrap();
        b.set_timeouts(0, 0, 60);
        let rules: Vec<String> = a
            .diff(&b)
            .iter()
            .map(crate::control::format::change_rule)
            .collect();
        assert_eq!(
            rules,
            [
                "-D -t 198.18.0.100:443",
                "-d -t 198.18.0.100:80 -r 198.19.0.2:8080",
                "-e -t 198.18.0.100:80 -r 198.19.0.1:8080 -m -w 3",
                "-A -t 198.18.0.100:81 -s wlc",
                "--set 0 0 60",
            ]
        );
    }
}
