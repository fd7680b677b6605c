//! A service's quorum and sorry server, after keepalived's checker
//! (`keepalived/check/ipwrapper.c`: `weigh_live_realservers`, `set_quorum_states`,
//! `update_quorum_state`, `perform_quorum_state`, `update_vs_notifies`; keepalived.conf(5)
//! `quorum`, `hysteresis`, `quorum_up`, `quorum_down`, `sorry_server`, `sorry_server_inhibit`,
//! `omega`).
//!
//! - The live weight of a service is the sum of the weights of its alive backends (a backend
//!   whose health check has it down counts nothing; a dynamic weight counts as set).
//! - At start the quorum is up when the live weight is at least `quorum + hysteresis`.
//! - While up, it is lost when the live weight is 0 or below `quorum - hysteresis`; while down,
//!   it is gained when the live weight reaches `quorum + hysteresis`.
//! - Losing the quorum with a sorry server puts the sorry server in (weight 1) and takes the
//!   alive backends out (weight 0 for those whose check is quiescent, as keepalived's
//!   `inhibit_on_failure` deletes them); gaining it takes the sorry server out (weight 0 with
//!   `sorry_server_inhibit`) and puts the alive backends back. Without a sorry server the pool
//!   is not touched.
//! - `quorum_down` runs on a loss (and at start when the quorum is down and a sorry server is
//!   put in), `quorum_up` on a gain; a service removed while its quorum is up runs
//!   `quorum_down`; with `omega` the director's shutdown runs `quorum_down` of the service (not
//!   after a takeover, where the successor carries on).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xvs_forwarding::service::Backend;

/// Default `quorum`, as keepalived's.
pub const DEFAULT_QUORUM: u32 = 1;

/// A service's quorum settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumConfig {
    /// Minimum live weight (at least 1).
    pub quorum: u32,
    /// Lost below `quorum - hysteresis`, gained at `quorum + hysteresis`.
    pub hysteresis: u32,
    pub sorry: Option<SorryServer>,
    /// Command run with `/bin/sh -c` when the quorum is gained.
    pub up_script: Option<String>,
    /// Command run with `/bin/sh -c` when the quorum is lost.
    pub down_script: Option<String>,
    /// Run `down_script` when the director shuts down.
    pub omega: bool,
}

impl Default for QuorumConfig {
    fn default() -> Self {
        QuorumConfig {
            quorum: DEFAULT_QUORUM,
            hysteresis: 0,
            sorry: None,
            up_script: None,
            down_script: None,
            omega: false,
        }
    }
}

/// The backend put in while the quorum is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SorryServer {
    /// Weight 1 when in.
    pub backend: Backend,
    /// Left in with weight 0 when taken out (keepalived's `sorry_server_inhibit`).
    pub inhibit: bool,
}

/// A service's quorum state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumState {
    pub up: bool,
    /// The sorry server is in the pool (weight 1).
    pub sorry_in: bool,
    /// The sorry server was put in once (with `inhibit` it stays at weight 0 afterwards).
    pub sorry_set: bool,
}

/// A quorum change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Gained,
    Lost,
}

impl QuorumState {
    /// The state at start (keepalived's `set_quorum_states`), before [`QuorumState::update`]
    /// with `init`.
    pub fn initial(cfg: &QuorumConfig, live_weight: u64) -> Self {
        QuorumState {
            up: live_weight >= u64::from(cfg.quorum) + u64::from(cfg.hysteresis),
            sorry_in: false,
            sorry_set: false,
        }
    }

    /// Compare `live_weight` with the thresholds (`update_quorum_state`); `init` on the first
    /// evaluation of a service. The transition, if any.
    pub fn update(
        &mut self,
        cfg: &QuorumConfig,
        live_weight: u64,
        init: bool,
    ) -> Option<Transition> {
        let q = i64::from(cfg.quorum);
        let h = i64::from(cfg.hysteresis);
        let threshold = if self.up { q - h } else { q + h };
        let w = i64::try_from(live_weight).unwrap_or(i64::MAX);
        if !self.up && w >= threshold {
            self.up = true;
            self.sorry_in = false;
            return Some(Transition::Gained);
        }
        let start_down = init && !self.up && cfg.sorry.is_some() && !self.sorry_in;
        if (self.up && (w == 0 || w < threshold)) || start_down {
            self.up = false;
            if cfg.sorry.is_some() && !self.sorry_in {
                self.sorry_in = true;
                self.sorry_set = true;
            }
            return Some(Transition::Lost);
        }
        None
    }

    /// The pool the workers run: `backends` (already with health applied: failed ones removed
    /// or at weight 0) where `alive(b)` says whether a backend counts as alive and
    /// `quiescent(b)` whether its check keeps it at weight 0 when taken out.
    pub fn pool(
        &self,
        cfg: &QuorumConfig,
        backends: Vec<Backend>,
        alive: impl Fn(&Backend) -> bool,
        quiescent: impl Fn(&Backend) -> bool,
    ) -> Vec<Backend> {
        let Some(sorry) = &cfg.sorry else {
            return backends;
        };
        let same = |b: &Backend| b.addr == sorry.backend.addr && b.port == sorry.backend.port;
        if self.sorry_in {
            let mut out: Vec<Backend> = backends
                .into_iter()
                .filter_map(|mut b| {
                    if same(&b) || !alive(&b) {
                        return Some(b);
                    }
                    quiescent(&b).then(|| {
                        b.weight = 0;
                        b
                    })
                })
                .collect();
            match out.iter_mut().find(|b| same(b)) {
                Some(b) => b.weight = 1,
                None => out.push(Backend {
                    weight: 1,
                    ..sorry.backend.clone()
                }),
            }
            out
        } else if sorry.inhibit && self.sorry_set && !backends.iter().any(same) {
            let mut out = backends;
            out.push(Backend {
                weight: 0,
                ..sorry.backend.clone()
            });
            out
        } else {
            backends
        }
    }
}

/// The live weight of `backends`: the sum of the weights of those `alive` says are alive.
pub fn live_weight<'a>(
    backends: impl IntoIterator<Item = &'a Backend>,
    alive: impl Fn(&Backend) -> bool,
) -> u64 {
    backends
        .into_iter()
        .filter(|b| alive(b))
        .map(|b| u64::from(b.weight))
        .sum()
}

/// How long a `quorum_down` script may run at shutdown (keepalived gives its stopping notifies
/// one second).
pub const SHUTDOWN_SCRIPT_TIMEOUT: Duration = Duration::from_secs(1);

fn script_command(cmd: &str, service: &str, state: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .env("XVS_SERVICE", service)
        .env("XVS_QUORUM", state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Start `cmd` (`/bin/sh -c`, with `XVS_SERVICE` and `XVS_QUORUM` = `up` or `down`) without
/// waiting; a thread reaps it.
pub fn run_script(cmd: &str, service: &str, up: bool) {
    let state = if up { "up" } else { "down" };
    match script_command(cmd, service, state).spawn() {
        Ok(mut child) => {
            let name = format!("xvs-quorum-{}", child.id());
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                let _ = child.wait();
            });
            if let Err(e) = spawned {
                tracing::warn!("quorum script of {service}: no thread to reap it: {e}");
            }
        }
        Err(e) => tracing::warn!("quorum_{state} script of {service}: cannot run {cmd:?}: {e}"),
    }
}

/// Run `cmd` as [`run_script`] with `up = false` and wait for it at most `timeout` (then kill it).
pub fn run_script_bounded(cmd: &str, service: &str, timeout: Duration) {
    let mut child = match script_command(cmd, service, "down").spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("quorum_down script of {service}: cannot run {cmd:?}: {e}");
            return;
        }
    };
    let end = Instant::now() + timeout;
    // Bounded: ends at `end`.
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {}
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            tracing::warn!("quorum_down script of {service}: killed after {timeout:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use xvs_forwarding::Method;

    fn be(last: u8, weight: u32) -> Backend {
        Backend {
            addr: IpAddr::from([198, 19, 0, last]),
            port: 80,
            weight,
            method: Method::Nat,
            u_threshold: 0,
            l_threshold: 0,
            conn_rate: 0,
        }
    }

    fn cfg(quorum: u32, hysteresis: u32, sorry: bool, inhibit: bool) -> QuorumConfig {
        QuorumConfig {
            quorum,
            hysteresis,
            sorry: sorry.then(|| SorryServer {
                backend: be(99, 1),
                inhibit,
            }),
            ..QuorumConfig::default()
        }
    }

    #[test]
    fn hysteresis_thresholds_follow_keepalived() {
        // quorum 10, hysteresis 2: up at start needs 12; lost below 8; regained at 12.
        let c = cfg(10, 2, false, false);
        let mut s = QuorumState::initial(&c, 11);
        assert!(!s.up);
        assert_eq!(
            s.update(&c, 11, true),
            None,
            "down without sorry: no start event"
        );
        assert_eq!(s.update(&c, 12, false), Some(Transition::Gained));
        assert_eq!(s.update(&c, 8, false), None, "8 is not below 10-2");
        assert_eq!(s.update(&c, 7, false), Some(Transition::Lost));
        assert_eq!(s.update(&c, 11, false), None, "11 is below 10+2");
        assert_eq!(s.update(&c, 12, false), Some(Transition::Gained));
        assert!(s.up);
    }

    #[test]
    fn zero_live_weight_loses_the_quorum_even_at_quorum_zero_threshold() {
        // quorum 1, hysteresis 1: threshold while up is 0, yet a live weight of 0 loses it.
        let c = cfg(1, 1, false, false);
        let mut s = QuorumState::initial(&c, 2);
        assert!(s.up);
        assert_eq!(s.update(&c, 1, false), None);
        assert_eq!(s.update(&c, 0, false), Some(Transition::Lost));
        assert_eq!(s.update(&c, 1, false), None);
        assert_eq!(s.update(&c, 2, false), Some(Transition::Gained));
    }

    #[test]
    fn starting_down_with_a_sorry_server_puts_it_in() {
        let c = cfg(1, 0, true, false);
        let mut s = QuorumState::initial(&c, 0);
        assert_eq!(s.update(&c, 0, true), Some(Transition::Lost));
        assert!(s.sorry_in);
        let pool = s.pool(&c, vec![], |_| true, |_| false);
        assert_eq!(pool, vec![be(99, 1)]);
        // Further evaluations while down change nothing.
        assert_eq!(s.update(&c, 0, false), None);
    }

    #[test]
    fn sorry_server_replaces_alive_backends_below_quorum_and_leaves_on_gain() {
        let c = cfg(3, 0, true, false);
        let mut s = QuorumState::initial(&c, 4);
        assert_eq!(s.update(&c, 4, true), None);
        // Backend .11 (weight 2) failed and was removed; .12 (weight 2) alive: 2 < 3.
        let backends = vec![be(12, 2), be(13, 0)];
        let alive = |b: &Backend| b.addr != IpAddr::from([198, 19, 0, 13]);
        let quiescent = |b: &Backend| b.addr == IpAddr::from([198, 19, 0, 12]);
        assert_eq!(
            s.update(&c, live_weight(&backends, alive), false),
            Some(Transition::Lost)
        );
        // .12 is alive with a quiescent check: weight 0; .13 (failed, quiescent) untouched.
        let pool = s.pool(&c, backends.clone(), alive, quiescent);
        assert_eq!(pool, vec![be(12, 0), be(13, 0), be(99, 1)]);
        // A non-quiescent alive backend is taken out.
        let pool = s.pool(&c, backends, alive, |_| false);
        assert_eq!(pool, vec![be(13, 0), be(99, 1)]);
        // .11 returns: 4 >= 3.
        let backends = vec![be(11, 2), be(12, 2)];
        assert_eq!(
            s.update(&c, live_weight(&backends, |_| true), false),
            Some(Transition::Gained)
        );
        assert!(!s.sorry_in);
        assert_eq!(s.pool(&c, backends.clone(), |_| true, |_| false), backends);
    }

    #[test]
    fn inhibited_sorry_server_stays_at_weight_zero_after_it_was_in() {
        let c = cfg(1, 0, true, true);
        let mut s = QuorumState::initial(&c, 1);
        assert_eq!(s.update(&c, 1, true), None);
        // Never put in yet: not in the pool.
        assert_eq!(
            s.pool(&c, vec![be(11, 1)], |_| true, |_| false),
            vec![be(11, 1)]
        );
        assert_eq!(s.update(&c, 0, false), Some(Transition::Lost));
        assert_eq!(s.pool(&c, vec![], |_| true, |_| false), vec![be(99, 1)]);
        assert_eq!(s.update(&c, 1, false), Some(Transition::Gained));
        assert_eq!(
            s.pool(&c, vec![be(11, 1)], |_| true, |_| false),
            vec![be(11, 1), be(99, 0)]
        );
    }

    #[test]
    fn a_sorry_server_that_is_also_a_backend_is_kept_at_weight_one() {
        let mut c = cfg(5, 0, true, false);
        c.sorry.as_mut().unwrap().backend = be(11, 1);
        let mut s = QuorumState::initial(&c, 3);
        assert_eq!(s.update(&c, 3, true), Some(Transition::Lost));
        let pool = s.pool(&c, vec![be(11, 3)], |_| true, |_| false);
        assert_eq!(pool, vec![be(11, 1)]);
    }
}
