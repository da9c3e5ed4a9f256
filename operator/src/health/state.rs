//! The health state machine, pure: `Unknown → OK ⇄ Degraded`, driven by consecutive results.
//!
//! - a success resets the failure count; `successThreshold` successes in a row make the state
//!   `OK` (from `Unknown` or `Degraded`);
//! - a failure resets the success count; `failureThreshold` failures in a row make it
//!   `Degraded` (from `Unknown` or `OK`);
//! - no data (the target is not there: a preview without URL or asleep, a Service without a
//!   ready endpoint): with `noData: fail` a failure; with `noData: unknown` the state becomes
//!   `Unknown` and both counts restart, because nothing is known about the target any more.

use crate::api::{HealthCheckStatus, HealthState, NoData};
use jiff::Timestamp;

/// What one probe says about the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    NoData,
}

/// The spec's thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub failure: u32,
    pub success: u32,
    pub no_data: NoData,
}

/// A state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    pub at: Timestamp,
}

impl Transition {
    /// `Degraded → OK`: the target recovered (the start of the restore figure).
    pub fn is_recovery(&self) -> bool {
        self.from == HealthState::Degraded && self.to == HealthState::Ok
    }

    pub fn is_degradation(&self) -> bool {
        self.to == HealthState::Degraded
    }
}

/// The state of one check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub state: HealthState,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub transitions: u64,
    pub last_transition: Option<Timestamp>,
}

impl Machine {
    /// Resumes from a recorded status (after a restart or a leader change), so a restart
    /// neither forgets an outage nor counts a transition twice.
    pub fn resume(status: Option<&HealthCheckStatus>) -> Self {
        let Some(st) = status else {
            return Machine::default();
        };
        Machine {
            state: st.state,
            consecutive_failures: st.consecutive_failures,
            consecutive_successes: st.consecutive_successes,
            transitions: st.transitions,
            last_transition: st.last_transition_time.as_ref().map(|t| t.0),
        }
    }

    /// Records one verdict; the transition it caused, if any.
    pub fn observe(
        &mut self,
        verdict: Verdict,
        th: Thresholds,
        now: Timestamp,
    ) -> Option<Transition> {
        let verdict = match (verdict, th.no_data) {
            (Verdict::NoData, NoData::Fail) => Verdict::Failure,
            (v, _) => v,
        };
        let next = match verdict {
            Verdict::Success => {
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                self.consecutive_failures = 0;
                (self.consecutive_successes >= th.success.max(1)).then_some(HealthState::Ok)
            }
            Verdict::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.consecutive_successes = 0;
                (self.consecutive_failures >= th.failure.max(1)).then_some(HealthState::Degraded)
            }
            Verdict::NoData => {
                self.consecutive_failures = 0;
                self.consecutive_successes = 0;
                Some(HealthState::Unknown)
            }
        };
        match next {
            Some(to) if to != self.state => {
                let t = Transition {
                    from: self.state,
                    to,
                    at: now,
                };
                self.state = to;
                self.transitions += 1;
                self.last_transition = Some(now);
                Some(t)
            }
            _ => None,
        }
    }
}

/// Whether an alert for `transition` is due: only degradations and recoveries alert (a first
/// `OK` or a target going away does not), and not within `cooldown` of the previous alert.
pub fn alert_due(
    transition: &Transition,
    last_alert: Option<Timestamp>,
    cooldown: Option<std::time::Duration>,
) -> bool {
    if !(transition.is_degradation() || transition.is_recovery()) {
        return false;
    }
    match (last_alert, cooldown) {
        (Some(last), Some(cooldown)) => {
            let since = transition.at.duration_since(last);
            since.unsigned_abs() >= cooldown || since.is_negative()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;
    use Verdict::{Failure, Success};
    const NO_DATA: Verdict = Verdict::NoData;

    fn th(failure: u32, success: u32, no_data: NoData) -> Thresholds {
        Thresholds {
            failure,
            success,
            no_data,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    /// Feeds verdicts and returns the state after each.
    fn run(m: &mut Machine, t: Thresholds, verdicts: &[Verdict]) -> Vec<HealthState> {
        verdicts
            .iter()
            .enumerate()
            .map(|(i, v)| {
                m.observe(*v, t, at(i as i64));
                m.state
            })
            .collect()
    }

    #[test]
    fn thresholds_decide_each_transition() {
        let t = th(3, 2, NoData::Unknown);
        let mut m = Machine::default();
        assert_eq!(
            run(
                &mut m,
                t,
                &[
                    Success, Success, Failure, Failure, Failure, Success, Success
                ]
            ),
            vec![Unknown, Ok, Ok, Ok, Degraded, Degraded, Ok]
        );
        assert_eq!(m.transitions, 3);
        assert_eq!(m.consecutive_successes, 2);
        assert_eq!(m.consecutive_failures, 0);
        assert_eq!(m.last_transition, Some(at(6)));
    }

    #[test]
    fn flapping_below_the_thresholds_changes_nothing() {
        let t = th(2, 2, NoData::Unknown);
        let mut m = Machine::default();
        run(&mut m, t, &[Success, Success]);
        let states = run(&mut m, t, &[Failure, Success, Failure, Success, Failure]);
        assert!(states.iter().all(|s| *s == Ok), "{states:?}");
        assert_eq!(m.transitions, 1);
    }

    #[test]
    fn a_target_that_never_worked_goes_degraded_from_unknown() {
        let mut m = Machine::default();
        let tr = (0..3)
            .filter_map(|i| m.observe(Failure, th(3, 1, NoData::Unknown), at(i)))
            .collect::<Vec<_>>();
        assert_eq!(tr.len(), 1);
        assert_eq!((tr[0].from, tr[0].to), (Unknown, Degraded));
        assert!(tr[0].is_degradation() && !tr[0].is_recovery());
    }

    #[test]
    fn no_data_unknown_resets_and_no_data_fail_counts() {
        let mut m = Machine::default();
        run(&mut m, th(1, 1, NoData::Unknown), &[Success]);
        let tr = m
            .observe(NO_DATA, th(1, 1, NoData::Unknown), at(9))
            .unwrap();
        assert_eq!((tr.from, tr.to), (Ok, Unknown));
        assert_eq!((m.consecutive_failures, m.consecutive_successes), (0, 0));
        // Unknown again: no second transition.
        assert!(
            m.observe(NO_DATA, th(1, 1, NoData::Unknown), at(10))
                .is_none()
        );

        let mut m = Machine::default();
        run(&mut m, th(2, 1, NoData::Fail), &[Success, NO_DATA]);
        assert_eq!(m.state, Ok);
        assert_eq!(m.consecutive_failures, 1);
        m.observe(NO_DATA, th(2, 1, NoData::Fail), at(5));
        assert_eq!(m.state, Degraded);
    }

    #[test]
    fn resume_keeps_the_recorded_state_and_counts() {
        let st = HealthCheckStatus {
            state: Degraded,
            consecutive_failures: 7,
            transitions: 4,
            ..Default::default()
        };
        let mut m = Machine::resume(Some(&st));
        assert_eq!(m.state, Degraded);
        // One more failure is not a new transition.
        assert!(
            m.observe(Failure, th(3, 1, NoData::Unknown), at(0))
                .is_none()
        );
        assert_eq!(m.consecutive_failures, 8);
        assert_eq!(m.transitions, 4);
    }

    #[test]
    fn alerts_only_for_degradation_and_recovery_outside_the_cooldown() {
        let down = Transition {
            from: Ok,
            to: Degraded,
            at: at(100),
        };
        let first_ok = Transition {
            from: Unknown,
            to: Ok,
            at: at(100),
        };
        let up = Transition {
            from: Degraded,
            to: Ok,
            at: at(100),
        };
        let gone = Transition {
            from: Ok,
            to: Unknown,
            at: at(100),
        };
        let cd = Some(std::time::Duration::from_secs(60));
        assert!(alert_due(&down, None, cd));
        assert!(alert_due(&up, Some(at(30)), cd));
        assert!(!alert_due(&up, Some(at(50)), cd), "inside the cooldown");
        assert!(!alert_due(&first_ok, None, cd));
        assert!(!alert_due(&gone, None, None));
        assert!(alert_due(&down, Some(at(99)), None), "no cooldown");
    }
}
