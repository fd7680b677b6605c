//! Choosing a scheduler by its ipvsadm name, and the scheduler flags of `ipvsadm -b`.
//!
//! Flags are the service flags `IP_VS_SVC_F_SCHED1..3` (0x8, 0x10, 0x20). ipvsadm
//! (`parse_sched_flags`) accepts a comma-separated list of `flag-1`, `flag-2`, `flag-3` for any
//! scheduler, and `sh-fallback`, `sh-port` (SCHED1, SCHED2) only with `sh`, `mh-fallback`,
//! `mh-port` only with `mh`. Listings (`-Ln` in parentheses, `-S` after `-b`) name the bits the
//! scheduler's way: `sh-fallback,sh-port[,flag-3]` for sh, `mh-...` for mh, `flag-N` otherwise.

use crate::locality::DEFAULT_EXPIRATION;
use crate::mh::MH_DEFAULT_TAB_INDEX;
use crate::{
    DestinationHashing, LeastConn, LocalityLeastConn, LocalityLeastConnReplicated, Maglev,
    MaglevHashing, NeverQueue, Overflow, PowerOfTwo, RoundRobin, Scheduler, ShortestExpectedDelay,
    SourceHashing, Time, WeightedFailover, WeightedLeastConn, WeightedRoundRobin,
};
use std::fmt;

/// Every scheduler name [`new_scheduler`] accepts.
pub const SCHEDULER_NAMES: [&str; 15] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "sh", "mh", "fo", "ovf", "twos",
    "maglev",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error("unknown scheduler `{0}` (known: rr, wrr, lc, wlc, sed, nq, lblc, lblcr, dh, sh, mh, fo, ovf, twos, maglev)")]
    UnknownScheduler(String),
    #[error("invalid scheduler flag `{0}`")]
    InvalidFlag(String),
    #[error("incompatible scheduler flag `{flag}` for scheduler `{scheduler}`")]
    IncompatibleFlag { flag: String, scheduler: String },
    #[error("empty scheduler flag list")]
    EmptyFlags,
    #[error("mh table index {0} out of range 8..=17 (CONFIG_IP_VS_MH_TAB_INDEX)")]
    MhTableIndex(u8),
}

/// The scheduler bits of a service's flags (`IP_VS_SVC_F_SCHED1..3`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SchedFlags(u32);

impl SchedFlags {
    pub const SCHED1: u32 = 0x0008;
    pub const SCHED2: u32 = 0x0010;
    pub const SCHED3: u32 = 0x0020;
    const ALL: u32 = Self::SCHED1 | Self::SCHED2 | Self::SCHED3;

    pub const NONE: SchedFlags = SchedFlags(0);

    /// From service flags as the kernel stores them; bits other than SCHED1..3 are ignored.
    pub const fn from_bits(bits: u32) -> Self {
        SchedFlags(bits & Self::ALL)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// SCHED1: `sh-fallback` / `mh-fallback`.
    pub const fn fallback(self) -> bool {
        self.0 & Self::SCHED1 != 0
    }

    /// SCHED2: `sh-port` / `mh-port`.
    pub const fn port(self) -> bool {
        self.0 & Self::SCHED2 != 0
    }

    /// Parse ipvsadm's `-b` argument. `scheduler` is the `-s` name if known (ipvsadm rejects
    /// `sh-*` flags for anything but sh and `mh-*` for anything but mh; with `None` it checks
    /// nothing, as ipvsadm does when `-b` comes without `-s`). Empty items (`a,,b`) are skipped
    /// like `strtok` does; an empty list is an error.
    pub fn parse(scheduler: Option<&str>, text: &str) -> Result<Self, SchedulerError> {
        let mut bits = 0;
        let mut any = false;
        for flag in text.split(',').filter(|f| !f.is_empty()) {
            any = true;
            let (bit, owner) = match flag {
                "flag-1" => (Self::SCHED1, None),
                "flag-2" => (Self::SCHED2, None),
                "flag-3" => (Self::SCHED3, None),
                "sh-fallback" => (Self::SCHED1, Some("sh")),
                "sh-port" => (Self::SCHED2, Some("sh")),
                "mh-fallback" => (Self::SCHED1, Some("mh")),
                "mh-port" => (Self::SCHED2, Some("mh")),
                _ => return Err(SchedulerError::InvalidFlag(flag.to_string())),
            };
            if let (Some(owner), Some(s)) = (owner, scheduler) {
                if s != owner {
                    return Err(SchedulerError::IncompatibleFlag {
                        flag: flag.to_string(),
                        scheduler: s.to_string(),
                    });
                }
            }
            bits |= bit;
        }
        if !any {
            return Err(SchedulerError::EmptyFlags);
        }
        Ok(SchedFlags(bits))
    }

    /// The flag text ipvsadm prints for `scheduler` (`-Ln` puts it in parentheses after the
    /// scheduler name, `-S` after `-b`); empty when no flag is set.
    pub fn display(self, scheduler: &str) -> FlagsDisplay<'_> {
        FlagsDisplay {
            flags: self,
            scheduler,
        }
    }

    /// What `ipvsadm -Ln` appends after the scheduler name: ` (<flags>)`, or nothing.
    /// `TCP  10.0.0.1:80 sh` + `" (sh-fallback,sh-port)"`.
    pub fn list_suffix(self, scheduler: &str) -> String {
        if self.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.display(scheduler))
        }
    }

    /// What `ipvsadm -S` appends after `-s <scheduler>`: ` -b <flags>`, or nothing.
    pub fn save_args(self, scheduler: &str) -> String {
        if self.is_empty() {
            String::new()
        } else {
            format!(" -b {}", self.display(scheduler))
        }
    }
}

/// See [`SchedFlags::display`].
#[derive(Clone, Copy, Debug)]
pub struct FlagsDisplay<'a> {
    flags: SchedFlags,
    scheduler: &'a str,
}

impl fmt::Display for FlagsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: [&str; 3] = match self.scheduler {
            "sh" => ["sh-fallback", "sh-port", "flag-3"],
            "mh" => ["mh-fallback", "mh-port", "flag-3"],
            _ => ["flag-1", "flag-2", "flag-3"],
        };
        let bits = [SchedFlags::SCHED1, SchedFlags::SCHED2, SchedFlags::SCHED3];
        let mut first = true;
        for (bit, name) in bits.iter().zip(names) {
            if self.flags.0 & bit != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Settings that the kernel takes from Kconfig or sysctls, and the twos seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedOptions {
    /// `CONFIG_IP_VS_MH_TAB_INDEX` (8..=17; default 12, M = 4093).
    pub mh_table_index: u8,
    /// sysctl `lblc_expiration` (default 24 h).
    pub lblc_expiration: Time,
    /// sysctl `lblcr_expiration` (default 24 h).
    pub lblcr_expiration: Time,
    /// Seed of the twos random stream (one stream per service, drawn by every worker in turn).
    pub twos_seed: u64,
    /// Maglev ring size (default 65537; should be prime).
    pub maglev_ring_size: u32,
}

impl Default for SchedOptions {
    fn default() -> Self {
        SchedOptions {
            mh_table_index: MH_DEFAULT_TAB_INDEX,
            lblc_expiration: Time(DEFAULT_EXPIRATION),
            lblcr_expiration: Time(DEFAULT_EXPIRATION),
            twos_seed: 0,
            maglev_ring_size: crate::MAGLEV_RING_SIZE,
        }
    }
}

/// A scheduler by ipvsadm name with default options. Call `update(.., Change::Init)` on it
/// before the first pick.
pub fn new_scheduler(name: &str, flags: &SchedFlags) -> Result<Box<dyn Scheduler>, SchedulerError> {
    new_scheduler_with(name, flags, &SchedOptions::default())
}

/// A scheduler by ipvsadm name. Flags that a scheduler does not use are accepted and ignored,
/// as in the kernel.
pub fn new_scheduler_with(
    name: &str,
    flags: &SchedFlags,
    opts: &SchedOptions,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    Ok(match name {
        "rr" => Box::new(RoundRobin::new()),
        "wrr" => Box::new(WeightedRoundRobin::new()),
        "lc" => Box::new(LeastConn::new()),
        "wlc" => Box::new(WeightedLeastConn::new()),
        "sed" => Box::new(ShortestExpectedDelay::new()),
        "nq" => Box::new(NeverQueue::new()),
        "lblc" => Box::new(LocalityLeastConn::with_expiration(opts.lblc_expiration)),
        "lblcr" => Box::new(LocalityLeastConnReplicated::with_expiration(
            opts.lblcr_expiration,
        )),
        "dh" => Box::new(DestinationHashing::new()),
        "sh" => Box::new(SourceHashing::new(flags.fallback(), flags.port())),
        "mh" => Box::new(
            MaglevHashing::with_table_index(opts.mh_table_index, flags.fallback(), flags.port())
                .ok_or(SchedulerError::MhTableIndex(opts.mh_table_index))?,
        ),
        "fo" => Box::new(WeightedFailover::new()),
        "ovf" => Box::new(Overflow::new()),
        "twos" => Box::new(PowerOfTwo::new(opts.twos_seed)),
        "maglev" => Box::new(Maglev::with_ring_size(opts.maglev_ring_size)),
        other => return Err(SchedulerError::UnknownScheduler(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        let f = SchedFlags::parse(Some("sh"), "sh-fallback,sh-port").unwrap();
        assert_eq!(f.bits(), 0x18);
        assert_eq!(f.display("sh").to_string(), "sh-fallback,sh-port");
        let f = SchedFlags::parse(Some("mh"), "mh-port").unwrap();
        assert_eq!(f.display("mh").to_string(), "mh-port");
        let f = SchedFlags::parse(Some("wrr"), "flag-3,flag-1").unwrap();
        assert_eq!(f.display("wrr").to_string(), "flag-1,flag-3");
        // Bits print the scheduler's way whatever text set them.
        let f = SchedFlags::parse(None, "flag-1,flag-2,flag-3").unwrap();
        assert_eq!(f.display("sh").to_string(), "sh-fallback,sh-port,flag-3");
        assert_eq!(f.display("mh").to_string(), "mh-fallback,mh-port,flag-3");
        assert_eq!(SchedFlags::NONE.display("sh").to_string(), "");
        let f = SchedFlags::parse(Some("sh"), "sh-port,sh-fallback").unwrap();
        assert_eq!(f.list_suffix("sh"), " (sh-fallback,sh-port)");
        assert_eq!(f.save_args("sh"), " -b sh-fallback,sh-port");
        assert_eq!(SchedFlags::NONE.list_suffix("wlc"), "");
        assert_eq!(SchedFlags::NONE.save_args("wlc"), "");
        assert_eq!(SchedFlags::parse(None, "flag-2,,").unwrap().bits(), 0x10);
        assert_eq!(SchedFlags::from_bits(0x1 | 0x8 | 0x40).bits(), 0x8);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            SchedFlags::parse(Some("mh"), "sh-port"),
            Err(SchedulerError::IncompatibleFlag {
                flag: "sh-port".into(),
                scheduler: "mh".into()
            })
        );
        assert!(SchedFlags::parse(None, "sh-port,mh-port").is_ok());
        assert_eq!(
            SchedFlags::parse(None, "fallback"),
            Err(SchedulerError::InvalidFlag("fallback".into()))
        );
        assert_eq!(SchedFlags::parse(None, ""), Err(SchedulerError::EmptyFlags));
        assert_eq!(
            SchedFlags::parse(None, ","),
            Err(SchedulerError::EmptyFlags)
        );
        assert!(SchedulerError::InvalidFlag("x".into())
            .to_string()
            .contains("`x`"));
    }

    #[test]
    fn factory_knows_every_name() {
        for name in SCHEDULER_NAMES {
            let s = new_scheduler(name, &SchedFlags::NONE).unwrap();
            assert_eq!(s.name(), name);
        }
        assert!(matches!(
            new_scheduler("WLC", &SchedFlags::NONE),
            Err(SchedulerError::UnknownScheduler(_))
        ));
        let opts = SchedOptions {
            mh_table_index: 20,
            ..SchedOptions::default()
        };
        assert_eq!(
            new_scheduler_with("mh", &SchedFlags::NONE, &opts).unwrap_err(),
            SchedulerError::MhTableIndex(20)
        );
    }

    /// `table_only` schedulers end in the same state after adds, removes and edits as after one
    /// `Init` on the final list (what lets a change set be applied with one build).
    #[test]
    fn table_only_schedulers_need_one_build() {
        use crate::{init_by_adds, BackendId, BackendView, Change, Flow, NoLoad};
        use std::net::{IpAddr, Ipv4Addr};
        let views = |ids: &[u32]| -> Vec<BackendView> {
            ids.iter()
                .map(|&i| BackendView {
                    id: BackendId(i),
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)),
                    port: 80,
                    weight: 1 + i % 3,
                    last_weight: 1 + i % 3,
                })
                .collect()
        };
        let flags = SchedFlags::from_bits(SchedFlags::SCHED2);
        for name in SCHEDULER_NAMES {
            let mut a = new_scheduler(name, &flags).unwrap();
            if !a.table_only() {
                assert!(a.table().is_none(), "{name}: not a table");
                continue;
            }
            // 40 backends added one by one, the 5th removed, the 7th edited.
            let all: Vec<u32> = (0..40).rev().collect();
            init_by_adds(a.as_mut(), &views(&all));
            let mut cur = views(&all);
            cur.remove(5);
            a.update(&cur, Change::Remove(5));
            cur[7].weight = 9;
            a.update(&cur, Change::Edit(7));
            let mut b = new_scheduler(name, &flags).unwrap();
            b.update(&cur, Change::Init);
            let t = b.table().expect("a table");
            for k in 0..2000u32 {
                let f = Flow {
                    proto: 6,
                    src: IpAddr::V4(Ipv4Addr::from(0xc612_0000 + k * 7919)),
                    sport: (k % 60000) as u16,
                    dst: IpAddr::V4(Ipv4Addr::from(0xc613_0000 + k % 13)),
                    dport: 80,
                };
                let want = a.pick(&f, &cur, &NoLoad, Time(0));
                assert_eq!(want, b.pick(&f, &cur, &NoLoad, Time(0)), "{name}: flow {k}");
                assert_eq!(want, t.pick_table(&f, &cur, &NoLoad), "{name}: flow {k}");
                assert_eq!(
                    want,
                    t.to_scheduler().pick(&f, &cur, &NoLoad, Time(0)),
                    "{name}: flow {k}"
                );
            }
        }
    }

    /// Exactly the schedulers without state of their own, rr and wrr pick through `&self`, and
    /// that pick (and the scheduler it gives back) answers as `pick` does, pick after pick, for
    /// loads with ties, OVERLOAD, weight 0 and `active > weight`.
    #[test]
    fn lock_free_picks_answer_as_pick() {
        use crate::load::testutil::{be, flow, TestLoad};
        use crate::Change;
        let lock_free = ["lc", "wlc", "sed", "nq", "fo", "ovf", "rr", "wrr"];
        for name in SCHEDULER_NAMES {
            let mut s = new_scheduler(name, &SchedFlags::NONE).unwrap();
            let list = vec![be(1, 2), be(2, 0), be(3, 1), be(4, 3), be(5, 1)];
            s.update(&list, Change::Init);
            let Some(t) = s.lock_free() else {
                assert!(!lock_free.contains(&name), "{name}: lock-free");
                continue;
            };
            assert!(lock_free.contains(&name), "{name}: not lock-free");
            assert!(
                s.table().is_none() && !s.table_only(),
                "{name}: not a table"
            );
            let mut back = t.to_scheduler();
            assert_eq!(back.name(), name);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for k in 0..3000u16 {
                let mut load = TestLoad::default();
                for id in 1..=5 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    load.set(id, (x % 5) as u32, ((x >> 8) % 4) as u32)
                        .overload(id, (x >> 16).is_multiple_of(7));
                }
                let f = flow([198, 18, 0, (k % 251) as u8], k);
                let want = s.pick(&f, &list, &load, Time(u64::from(k)));
                assert_eq!(want, t.pick_table(&f, &list, &load), "{name}: load {k}");
                assert_eq!(
                    want,
                    back.pick(&f, &list, &load, Time(0)),
                    "{name}: load {k}"
                );
            }
        }
    }
}
