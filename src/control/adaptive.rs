//! Adaptive weights: a service's effective backend weights follow the backends' measured
//! response time and reported load (`[service.adaptive]`), so that a slow or loaded backend gets
//! less new work before it fails its health check.
//!
//! The idea is the feedback loop of feedbackd / lbagent (an agent on each backend reports load,
//! the director rescales the LVS weights) and of the response-time weighting reverse proxies do
//! (HAProxy's agent-check `weight%`, nginx plus' `least_time`), applied to IPVS weights.
//! Sans-I/O: measurements and `now` come in, factors and weights go out.
//!
//! Every update interval, per backend:
//! 1. A target factor from its measurements, each only if known:
//!    response time `r` (the health check's smoothed response time) against `reference_ms`:
//!    `reference / r` (full weight at or below the reference, half at twice the reference…);
//!    load `l` percent (an http check's `load_path`): `(100 - l) / 100`. The target is the
//!    smaller of the two, 1 when neither is known, then clamped to `[min_percent, max_percent]`
//!    of the weight.
//! 2. Damping: the factor moves `damping` of the way from its current value to the target, and
//!    by at most `max_step_percent` points per interval; it never overshoots the target, so it
//!    approaches it monotonically and does not oscillate around it.
//! 3. The effective weight is `round(base × factor)`, at least 1 for a base above 0 (adaptive
//!    weights never drain a backend: health checks do that) and at most 65535; `base` is the
//!    configured weight, or the weight a dynamic (`misc_dynamic`) check set.
//!
//! A backend starts at factor 1 (clamped to the bounds). Changes of at least `log_percent`
//! points of the base weight since the last logged value are reported for a log line.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The largest weight an effective weight takes (ipvsadm's range).
pub const MAX_WEIGHT: u32 = 65535;

/// `[service.adaptive]` as written in the TOML.
///
/// ```toml
/// [service.adaptive]
/// reference_ms = 50        # response time that keeps the full weight (omit: not followed)
/// min_percent = 10         # lowest effective weight, % of the configured one (default 10)
/// max_percent = 100        # highest (default 100; above 100 a fast backend gets more)
/// damping = 0.5            # share of the distance to the target moved per update (default 0.5)
/// max_step_percent = 25    # at most this many points of the weight per update (default 25)
/// interval_ms = 1000       # update interval (default 1000)
/// log_percent = 20         # log a change of at least this many points (default 20)
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    pub reference_ms: Option<u64>,
    pub min_percent: Option<u32>,
    pub max_percent: Option<u32>,
    pub damping: Option<f64>,
    pub max_step_percent: Option<u32>,
    pub interval_ms: Option<u64>,
    pub log_percent: Option<u32>,
}

/// An `[service.adaptive]` that cannot be used: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct AdaptiveConfigError {
    pub field: &'static str,
    pub reason: String,
}

/// A validated adaptive policy (factors as fractions of the base weight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptivePolicy {
    pub reference: Option<Duration>,
    pub min: f64,
    pub max: f64,
    pub damping: f64,
    pub max_step: f64,
    pub interval: Duration,
    pub log_change: f64,
}

impl Default for AdaptivePolicy {
    fn default() -> Self {
        AdaptivePolicy {
            reference: None,
            min: 0.10,
            max: 1.0,
            damping: 0.5,
            max_step: 0.25,
            interval: Duration::from_millis(1000),
            log_change: 0.20,
        }
    }
}

impl AdaptiveConfig {
    /// Validate into a policy.
    pub fn validate(&self) -> Result<AdaptivePolicy, AdaptiveConfigError> {
        let err = |field: &'static str, reason: String| AdaptiveConfigError { field, reason };
        let d = AdaptivePolicy::default();
        let percent = |field: &'static str, v: Option<u32>, default: f64, lo: u32, hi: u32| match v
        {
            None => Ok(default),
            Some(p) if (lo..=hi).contains(&p) => Ok(f64::from(p) / 100.0),
            Some(p) => Err(err(field, format!("{p} is out of range {lo}..={hi}"))),
        };
        let min = percent("min_percent", self.min_percent, d.min, 1, 1000)?;
        let max = percent("max_percent", self.max_percent, d.max, 1, 1000)?;
        if min > max {
            return Err(err(
                "min_percent",
                format!(
                    "{} is above max_percent ({})",
                    (min * 100.0).round(),
                    (max * 100.0).round()
                ),
            ));
        }
        let max_step = percent(
            "max_step_percent",
            self.max_step_percent,
            d.max_step,
            1,
            1000,
        )?;
        let log_change = percent("log_percent", self.log_percent, d.log_change, 1, 1000)?;
        let damping = match self.damping {
            None => d.damping,
            Some(x) if x > 0.0 && x <= 1.0 => x,
            Some(x) => return Err(err("damping", format!("{x} is not in (0, 1]"))),
        };
        let reference = match self.reference_ms {
            None => None,
            Some(ms) if (1..=60_000).contains(&ms) => Some(Duration::from_millis(ms)),
            Some(ms) => {
                return Err(err(
                    "reference_ms",
                    format!("{ms} is out of range 1..=60000"),
                ))
            }
        };
        let interval = match self.interval_ms {
            None => d.interval,
            Some(ms) if (100..=3_600_000).contains(&ms) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(err(
                    "interval_ms",
                    format!("{ms} is out of range 100..=3600000"),
                ))
            }
        };
        Ok(AdaptivePolicy {
            reference,
            min,
            max,
            damping,
            max_step,
            interval,
            log_change,
        })
    }
}

/// What is known of a backend now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measure {
    /// Smoothed response time of its health check.
    pub response: Option<Duration>,
    /// Reported load in percent.
    pub load: Option<u8>,
}

impl AdaptivePolicy {
    /// The factor `m` calls for, within the bounds.
    pub fn target(&self, m: &Measure) -> f64 {
        let mut t: f64 = 1.0;
        let mut known = false;
        if let (Some(reference), Some(r)) = (self.reference, m.response) {
            let r = r.as_secs_f64().max(1e-6);
            t = reference.as_secs_f64() / r;
            known = true;
        }
        if let Some(l) = m.load {
            let f = f64::from(100 - l.min(100)) / 100.0;
            t = if known { t.min(f) } else { f };
        }
        t.clamp(self.min, self.max)
    }

    /// One damped step from `current` towards `target`: `damping` of the distance, at most
    /// `max_step`, never past the target; within the bounds.
    pub fn step(&self, current: f64, target: f64) -> f64 {
        let current = current.clamp(self.min, self.max);
        let gap = target - current;
        let mut delta = gap * self.damping;
        delta = delta.clamp(-self.max_step, self.max_step);
        // Within half a percent point: arrive (no endless approach).
        if (gap - delta).abs() < 0.005 {
            delta = gap;
        }
        (current + delta).clamp(self.min, self.max)
    }
}

/// The effective weight of a backend of weight `base` at `factor`: 0 for 0, else
/// `round(base × factor)` within 1..=[`MAX_WEIGHT`].
pub fn effective_weight(base: u32, factor: f64) -> u32 {
    if base == 0 {
        return 0;
    }
    let w = (f64::from(base) * factor).round();
    if w.is_nan() || w < 1.0 {
        1
    } else if w > f64::from(MAX_WEIGHT) {
        MAX_WEIGHT
    } else {
        w as u32
    }
}

/// A backend's effective weight changed in an update.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightChange<K> {
    pub backend: K,
    pub base: u32,
    pub from: u32,
    pub to: u32,
    /// The factor now (fraction of `base`).
    pub factor: f64,
    /// The change since the last logged weight reaches the policy's `log_change`.
    pub notable: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    factor: f64,
    base: u32,
    /// The effective weight last reported as notable (or the first one).
    logged: u32,
}

/// One service's adaptive state: the factor of each backend, keyed by `K`.
#[derive(Debug, Clone)]
pub struct Adaptive<K> {
    slots: HashMap<K, Slot>,
    last: Option<Instant>,
}

impl<K> Default for Adaptive<K> {
    fn default() -> Self {
        Adaptive {
            slots: HashMap::new(),
            last: None,
        }
    }
}

impl<K: Copy + Eq + Hash> Adaptive<K> {
    /// The factor of `backend` (1 when it has none yet).
    pub fn factor(&self, backend: &K) -> f64 {
        self.slots.get(backend).map_or(1.0, |s| s.factor)
    }

    /// The effective weight of `backend` with base weight `base`.
    pub fn weight(&self, backend: &K, base: u32) -> u32 {
        effective_weight(base, self.factor(backend))
    }

    /// Whether an update is due at `now` (the first one is).
    pub fn due(&self, policy: &AdaptivePolicy, now: Instant) -> bool {
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) >= policy.interval)
    }

    /// One update at `now` if due (else `None`): every backend of `backends` (key, base weight,
    /// measurements) steps towards its target; backends not listed are forgotten. The
    /// backends whose effective weight changed.
    pub fn update(
        &mut self,
        policy: &AdaptivePolicy,
        now: Instant,
        backends: &[(K, u32, Measure)],
    ) -> Option<Vec<WeightChange<K>>> {
        if !self.due(policy, now) {
            return None;
        }
        self.last = Some(now);
        self.slots
            .retain(|k, _| backends.iter().any(|(b, _, _)| b == k));
        let mut changes = Vec::new();
        for &(key, base, m) in backends {
            let start = policy.step(1.0, 1.0);
            let slot = self.slots.entry(key).or_insert(Slot {
                factor: start,
                base,
                logged: effective_weight(base, start),
            });
            let from = effective_weight(slot.base, slot.factor);
            slot.factor = policy.step(slot.factor, policy.target(&m));
            if slot.base != base {
                slot.logged = effective_weight(base, slot.factor);
                slot.base = base;
            }
            let to = effective_weight(base, slot.factor);
            if to == from {
                continue;
            }
            let moved = f64::from(to.abs_diff(slot.logged));
            let notable = base > 0 && moved >= policy.log_change * f64::from(base) - 1e-9;
            if notable {
                slot.logged = to;
            }
            changes.push(WeightChange {
                backend: key,
                base,
                from,
                to,
                factor: slot.factor,
                notable,
            });
        }
        Some(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AdaptivePolicy {
        AdaptiveConfig {
            reference_ms: Some(50),
            min_percent: Some(10),
            max_percent: Some(100),
            damping: Some(0.5),
            max_step_percent: Some(25),
            interval_ms: Some(1000),
            log_percent: Some(20),
        }
        .validate()
        .unwrap()
    }

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    /// Run `n` updates one interval apart from `t0`, with `slow` measured for backend 1 and
    /// 5 ms for backend 0; the factors of backend 1 after each.
    fn run(
        a: &mut Adaptive<u8>,
        p: &AdaptivePolicy,
        t0: Instant,
        from: u32,
        n: u32,
        slow: Measure,
    ) -> Vec<f64> {
        let fast = Measure {
            response: ms(5),
            load: None,
        };
        (from..from + n)
            .map(|i| {
                let now = t0 + p.interval * i;
                a.update(p, now, &[(0, 100, fast), (1, 100, slow)])
                    .expect("due");
                a.factor(&1)
            })
            .collect()
    }

    #[test]
    fn a_slow_backend_converges_to_its_target_with_bounded_monotone_steps() {
        let p = policy();
        let mut a = Adaptive::default();
        let t0 = Instant::now();
        // 200 ms against a 50 ms reference: target 0.25.
        let slow = Measure {
            response: ms(200),
            load: None,
        };
        assert!((p.target(&slow) - 0.25).abs() < 1e-9);
        let f = run(&mut a, &p, t0, 0, 10, slow);
        // Damping: half the distance but at most 25 points: 1 → 0.75 → 0.5 → 0.375 → …
        assert!((f[0] - 0.75).abs() < 1e-9, "{f:?}");
        assert!((f[1] - 0.5).abs() < 1e-9, "{f:?}");
        assert!((f[2] - 0.375).abs() < 1e-9, "{f:?}");
        let mut prev = 1.0;
        for x in &f {
            assert!(prev - x <= 0.25 + 1e-9, "step above max_step: {f:?}");
            assert!(
                *x <= prev && *x >= 0.25 - 1e-9,
                "not monotone or overshoot: {f:?}"
            );
            prev = *x;
        }
        assert_eq!(*f.last().unwrap(), 0.25, "arrives exactly: {f:?}");
        assert_eq!(a.weight(&1, 100), 25);
        // The fast backend stays at full weight.
        assert_eq!(a.factor(&0), 1.0);
        assert_eq!(a.weight(&0, 100), 100);
    }

    #[test]
    fn bounds_hold_for_very_slow_loaded_and_very_fast_backends() {
        let mut p = policy();
        let t0 = Instant::now();
        let very_slow = Measure {
            response: ms(60_000),
            load: Some(100),
        };
        assert_eq!(p.target(&very_slow), 0.10);
        let mut a = Adaptive::default();
        let f = run(&mut a, &p, t0, 0, 20, very_slow);
        assert!(f.iter().all(|x| *x >= 0.10), "{f:?}");
        assert_eq!(*f.last().unwrap(), 0.10);
        // Weight 1 at 10 %: still 1 (never drained); weight 0 stays 0.
        assert_eq!(a.weight(&1, 1), 1);
        assert_eq!(a.weight(&1, 0), 0);
        // Above 100 %: a backend faster than the reference gets more, up to max_percent.
        p.max = 1.5;
        let fast = Measure {
            response: ms(1),
            load: None,
        };
        assert_eq!(p.target(&fast), 1.5);
        let mut a = Adaptive::default();
        let f = run(&mut a, &p, t0, 0, 20, fast);
        assert!(f.iter().all(|x| *x <= 1.5), "{f:?}");
        assert_eq!(a.weight(&1, 100), 150);
        assert_eq!(effective_weight(60_000, 1.5), MAX_WEIGHT);
    }

    #[test]
    fn load_figures_and_response_times_combine_by_the_smaller_factor() {
        let p = policy();
        let m = |r: Option<Duration>, l: Option<u8>| Measure {
            response: r,
            load: l,
        };
        assert_eq!(p.target(&m(None, None)), 1.0);
        assert_eq!(p.target(&m(None, Some(40))), 0.6);
        assert_eq!(p.target(&m(ms(100), Some(40))), 0.5);
        assert_eq!(p.target(&m(ms(60), Some(80))), 0.2_f64.max(0.1));
        assert_eq!(p.target(&m(ms(10), Some(0))), 1.0);
        // Without a reference the response time is not followed.
        let no_ref = AdaptivePolicy {
            reference: None,
            ..p
        };
        assert_eq!(no_ref.target(&m(ms(5000), None)), 1.0);
    }

    #[test]
    fn a_recovered_backend_climbs_back_to_full_weight() {
        let p = policy();
        let mut a = Adaptive::default();
        let t0 = Instant::now();
        let slow = Measure {
            response: ms(500),
            load: None,
        };
        run(&mut a, &p, t0, 0, 10, slow);
        assert_eq!(a.factor(&1), 0.10);
        let fine = Measure {
            response: ms(20),
            load: None,
        };
        let f = run(&mut a, &p, t0, 10, 10, fine);
        let mut prev = 0.10;
        for x in &f {
            assert!(*x >= prev && x - prev <= 0.25 + 1e-9, "{f:?}");
            prev = *x;
        }
        assert_eq!(*f.last().unwrap(), 1.0, "{f:?}");
        assert_eq!(a.weight(&1, 100), 100);
    }

    #[test]
    fn updates_wait_for_the_interval_and_report_changes() {
        let p = policy();
        let mut a: Adaptive<u8> = Adaptive::default();
        let t0 = Instant::now();
        // Target 0.25: weights 75, 50, 38, 31, 28, …
        let slow = Measure {
            response: ms(200),
            load: None,
        };
        let c = a.update(&p, t0, &[(1, 100, slow)]).expect("first is due");
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].from, c[0].to, c[0].notable), (100, 75, true));
        assert!(a
            .update(&p, t0 + Duration::from_millis(999), &[(1, 100, slow)])
            .is_none());
        // 75 → 50: 25 points since the logged 75: notable; 50 → 38 → 31: 12 and 19 points
        // since the logged 50: not; → 28: 22 points: notable.
        let c = a.update(&p, t0 + p.interval, &[(1, 100, slow)]).unwrap();
        assert_eq!((c[0].from, c[0].to, c[0].notable), (75, 50, true));
        let c = a
            .update(&p, t0 + p.interval * 2, &[(1, 100, slow)])
            .unwrap();
        assert_eq!((c[0].from, c[0].to, c[0].notable), (50, 38, false));
        let c = a
            .update(&p, t0 + p.interval * 3, &[(1, 100, slow)])
            .unwrap();
        assert_eq!((c[0].from, c[0].to, c[0].notable), (38, 31, false));
        let c = a
            .update(&p, t0 + p.interval * 4, &[(1, 100, slow)])
            .unwrap();
        assert_eq!((c[0].from, c[0].to, c[0].notable), (31, 28, true));
        // At the target: no change reported.
        for i in 5..10 {
            a.update(&p, t0 + p.interval * i, &[(1, 100, slow)]);
        }
        let c = a
            .update(&p, t0 + p.interval * 10, &[(1, 100, slow)])
            .unwrap();
        assert!(c.is_empty(), "{c:?}");
        // A backend no longer listed is forgotten.
        a.update(&p, t0 + p.interval * 11, &[]).unwrap();
        assert_eq!(a.factor(&1), 1.0);
    }

    #[test]
    fn the_configuration_is_checked() {
        let bad = |c: AdaptiveConfig| c.validate().unwrap_err().field;
        let d = AdaptiveConfig::default();
        assert_eq!(d.validate().unwrap(), AdaptivePolicy::default());
        assert_eq!(
            bad(AdaptiveConfig {
                min_percent: Some(0),
                ..d.clone()
            }),
            "min_percent"
        );
        assert_eq!(
            bad(AdaptiveConfig {
                min_percent: Some(60),
                max_percent: Some(50),
                ..d.clone()
            }),
            "min_percent"
        );
        assert_eq!(
            bad(AdaptiveConfig {
                damping: Some(0.0),
                ..d.clone()
            }),
            "damping"
        );
        assert_eq!(
            bad(AdaptiveConfig {
                damping: Some(f64::NAN),
                ..d.clone()
            }),
            "damping"
        );
        assert_eq!(
            bad(AdaptiveConfig {
                interval_ms: Some(10),
                ..d.clone()
            }),
            "interval_ms"
        );
        assert_eq!(
            bad(AdaptiveConfig {
                reference_ms: Some(0),
                ..d.clone()
            }),
            "reference_ms"
        );
        assert_eq!(
            bad(AdaptiveConfig {
                max_step_percent: Some(0),
                ..d
            }),
            "max_step_percent"
        );
    }
}
