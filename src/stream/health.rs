//! Liveness and readiness: what `/health/live` and `/health/ready` answer, decided from the
//! run's status, its loop's heartbeat and a few metrics. Pure: the HTTP edge gathers the inputs.
//!
//! - Live: the process can make progress. The loop turns (it polls at least every 100 ms), or
//!   it waits on something that will end: a broker outage, a commit retried through one, a
//!   restore. A process the group gave up on and that cannot rejoin is not live.
//! - Ready: it serves what it owns and keeps up: running, assigned partitions by the group and
//!   in step with it (not rejoining, not just back from a pause), the input topics exist, a
//!   broker answers, commits succeed, the loop turned recently, the dead-letter share is below
//!   its limit, and the consumer is no further behind than the configured bound.

use serde::Serialize;

use super::runner::RunStatus;

/// The loop turns at least every 100 ms when all is well; past this (or half the session
/// timeout, if that is shorter: the group may be about to move on) it is not ready.
pub const READY_STALL_MS: i64 = 10_000;
/// Past this without a turn, and with nothing known to wait on, it is not live.
pub const LIVE_STALL_MS: i64 = 120_000;

/// What the verdicts are decided from.
#[derive(Debug, Clone)]
pub struct HealthInputs<'a> {
    pub status: &'a RunStatus,
    pub now_unix_ms: i64,
    /// When the loop last turned.
    pub heartbeat_unix_ms: Option<i64>,
    pub broker_unreachable_since_unix_s: Option<f64>,
    pub commit_failing_since_unix_s: Option<f64>,
    /// The dead-letter share of the last records is above its limit.
    pub dead_letters_above_max: bool,
    pub max_lag_records: i64,
}

/// A verdict and, when it is not ok, why (each reason a sentence an operator can act on).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub ok: bool,
    pub reasons: Vec<String>,
}

impl Verdict {
    fn of(reasons: Vec<String>) -> Verdict {
        Verdict {
            ok: reasons.is_empty(),
            reasons,
        }
    }
}

impl HealthInputs<'_> {
    /// How long the loop may stand still and be ready.
    fn ready_stall_ms(&self) -> i64 {
        let half_session = self
            .status
            .session_timeout_ms
            .map_or(i64::MAX, |t| i64::try_from(t / 2).unwrap_or(i64::MAX));
        READY_STALL_MS.min(half_session)
    }

    fn stood_still_ms(&self) -> Option<i64> {
        self.heartbeat_unix_ms
            .map(|beat| (self.now_unix_ms - beat).max(0))
    }

    /// Something the loop may rightly wait on for a while.
    fn waiting_on(&self) -> Option<&'static str> {
        if self.status.restoring {
            Some("restoring partitions")
        } else if self.broker_unreachable_since_unix_s.is_some() {
            Some("a broker outage")
        } else if self.commit_failing_since_unix_s.is_some() {
            Some("a state commit retried through an outage")
        } else {
            None
        }
    }
}

/// Whether pages and data may be served: not while the process cannot vouch for owning what
/// it holds (rejoining, membership unconfirmed), nor while its loop has stood still past
/// [`READY_STALL_MS`] (or half the session timeout) with nothing known to wait on (it may be
/// just back from a pause, before it has noticed), nor past the whole session timeout whatever
/// it waits on: a commit retried after a pause looks like a wait, but the group may have given
/// its partitions away meanwhile.
pub fn may_serve(inputs: &HealthInputs<'_>) -> bool {
    let still = inputs.stood_still_ms().unwrap_or(0);
    let stalled = still > inputs.ready_stall_ms() && inputs.waiting_on().is_none();
    let past_session = inputs
        .status
        .session_timeout_ms
        .is_some_and(|t| u64::try_from(still).unwrap_or(0) > t);
    inputs.status.owns_what_it_holds() && !(inputs.status.running && (stalled || past_session))
}

/// `/health/live`.
pub fn liveness(inputs: &HealthInputs<'_>) -> Verdict {
    let mut reasons = Vec::new();
    let status = inputs.status;
    if !status.running {
        reasons.push(match &status.last_error {
            Some(e) => format!("the pipeline stopped: {e}"),
            None => "the pipeline is not running".into(),
        });
    } else if let Some(still) = inputs.stood_still_ms()
        && still > LIVE_STALL_MS
        && inputs.waiting_on().is_none()
    {
        reasons.push(format!(
            "the pipeline loop has not turned for {:.0} s and waits on nothing known",
            still as f64 / 1000.0
        ));
    }
    Verdict::of(reasons)
}

/// `/health/ready` (and `/health`).
pub fn readiness(inputs: &HealthInputs<'_>) -> Verdict {
    let mut reasons = liveness(inputs).reasons;
    let status = inputs.status;
    if let Some(e) = status.last_error.as_ref().filter(|_| status.running) {
        reasons.push(format!("last error: {e}"));
    }
    if status.running {
        if let Some(still) = inputs
            .stood_still_ms()
            .filter(|s| *s > inputs.ready_stall_ms())
        {
            reasons.push(match inputs.waiting_on() {
                Some(what) => format!(
                    "the pipeline loop has waited {:.0} s on {what}",
                    still as f64 / 1000.0
                ),
                None => format!(
                    "the pipeline loop has not turned for {:.0} s (paused or stalled)",
                    still as f64 / 1000.0
                ),
            });
        } else if status.restoring {
            reasons.push("restoring assigned partitions".into());
        }
    }
    if status.rejoining_since_unix_ms.is_some() {
        reasons.push(
            "the consumer group moved on without this process (a pause past the session timeout?): it holds nothing and is rejoining".into(),
        );
    } else if status.membership_unconfirmed_since_unix_ms.is_some() {
        reasons.push(
            "the loop stood still past the session timeout: membership unconfirmed until the group answers".into(),
        );
    }
    if status.assigned_partitions.is_none() && status.rejoining_since_unix_ms.is_none() {
        reasons.push(match &status.source.group_error {
            Some(e) => {
                format!("the consumer group has assigned no partitions yet; last group error: {e}")
            }
            None => "the consumer group has assigned no partitions yet".into(),
        });
    }
    for topic in &status.source.missing_topics {
        reasons.push(format!(
            "input topic `{topic}` does not exist (a mistyped name? `safetel topics create` makes it)"
        ));
    }
    if let Some(since) = inputs.broker_unreachable_since_unix_s {
        reasons.push(format!("no broker reachable since unix {since:.0}"));
    }
    if let Some(since) = inputs.commit_failing_since_unix_s {
        reasons.push(format!("state commits failing since unix {since:.0}"));
    }
    if inputs.dead_letters_above_max {
        reasons.push("the dead-letter share of the last records is above its limit".into());
    }
    let behind: i64 = status.lag.values().sum();
    if behind > inputs.max_lag_records {
        reasons.push(format!(
            "{behind} records behind the input (ready at {} or fewer)",
            inputs.max_lag_records
        ));
    }
    Verdict::of(reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn healthy_status() -> RunStatus {
        RunStatus {
            running: true,
            assigned_partitions: Some(vec![0, 1]),
            ..RunStatus::default()
        }
    }

    fn inputs(status: &RunStatus) -> HealthInputs<'_> {
        HealthInputs {
            status,
            now_unix_ms: NOW,
            heartbeat_unix_ms: Some(NOW - 50),
            broker_unreachable_since_unix_s: None,
            commit_failing_since_unix_s: None,
            dead_letters_above_max: false,
            max_lag_records: 1000,
        }
    }

    fn reasons_contain(verdict: &Verdict, text: &str) -> bool {
        !verdict.ok && verdict.reasons.iter().any(|r| r.contains(text))
    }

    #[test]
    fn a_running_assigned_caught_up_process_is_live_and_ready() {
        let status = healthy_status();
        assert_eq!(liveness(&inputs(&status)), Verdict::of(vec![]));
        assert_eq!(readiness(&inputs(&status)), Verdict::of(vec![]));
    }

    #[test]
    fn a_broker_outage_is_not_ready_but_live() {
        let status = healthy_status();
        let mut outage = inputs(&status);
        outage.broker_unreachable_since_unix_s = Some(1.8e9);
        outage.commit_failing_since_unix_s = Some(1.8e9);
        outage.heartbeat_unix_ms = Some(NOW - 200_000); // blocked in a commit's retries
        assert!(liveness(&outage).ok, "{:?}", liveness(&outage));
        let ready = readiness(&outage);
        assert!(reasons_contain(&ready, "no broker reachable"), "{ready:?}");
        assert!(
            reasons_contain(&ready, "waited 200 s on a broker outage"),
            "{ready:?}"
        );
    }

    #[test]
    fn what_stops_consuming_is_not_ready_and_says_why() {
        let unassigned = RunStatus {
            assigned_partitions: None,
            source: crate::stream::runner::SourceHealth {
                missing_topics: vec!["telemetry.evnts".into()],
                group_error: Some("JoinGroup failed: Broker: Invalid session timeout".into()),
            },
            ..healthy_status()
        };
        let ready = readiness(&inputs(&unassigned));
        assert!(
            reasons_contain(&ready, "`telemetry.evnts` does not exist"),
            "{ready:?}"
        );
        assert!(
            reasons_contain(&ready, "Invalid session timeout"),
            "{ready:?}"
        );
        assert!(liveness(&inputs(&unassigned)).ok);

        let status = healthy_status();
        let mut flooded = inputs(&status);
        flooded.dead_letters_above_max = true;
        assert!(reasons_contain(&readiness(&flooded), "dead-letter share"));

        let behind = RunStatus {
            lag: [
                (crate::engine::PartitionId::Source(0), 800),
                (crate::engine::PartitionId::Source(1), 400),
            ]
            .into(),
            ..healthy_status()
        };
        assert!(reasons_contain(
            &readiness(&inputs(&behind)),
            "1200 records behind"
        ));
    }

    #[test]
    fn a_paused_or_rejoining_process_is_not_ready_and_a_stalled_one_not_live() {
        let status = healthy_status();
        let mut paused = inputs(&status);
        paused.heartbeat_unix_ms = Some(NOW - 60_000);
        let ready = readiness(&paused);
        assert!(reasons_contain(&ready, "not turned for 60 s"), "{ready:?}");
        assert!(liveness(&paused).ok, "a minute is not yet dead");
        paused.heartbeat_unix_ms = Some(NOW - LIVE_STALL_MS - 1000);
        assert!(reasons_contain(
            &liveness(&paused),
            "waits on nothing known"
        ));

        // With a 6 s session timeout, 4 s standing still is already too long to be ready.
        let grouped = RunStatus {
            session_timeout_ms: Some(6000),
            ..healthy_status()
        };
        let mut short_pause = inputs(&grouped);
        short_pause.heartbeat_unix_ms = Some(NOW - 4000);
        assert!(reasons_contain(
            &readiness(&short_pause),
            "not turned for 4 s"
        ));
        assert!(!may_serve(&short_pause), "no data served either");

        // A commit retried through an outage is a wait, and data may be served while it lasts,
        // but not past the session timeout: the process may have been paused mid-commit.
        let mut retrying = inputs(&grouped);
        retrying.commit_failing_since_unix_s = Some(1.8e9);
        retrying.heartbeat_unix_ms = Some(NOW - 4000);
        assert!(may_serve(&retrying), "4 s on a commit, within the session");
        retrying.heartbeat_unix_ms = Some(NOW - 11_000);
        assert!(
            !may_serve(&retrying),
            "11 s on a commit, past the 6 s session"
        );
        let ungrouped = healthy_status();
        let mut alone = inputs(&ungrouped);
        alone.commit_failing_since_unix_s = Some(1.8e9);
        alone.heartbeat_unix_ms = Some(NOW - 60_000);
        assert!(may_serve(&alone), "no group to move on without it");

        let rejoining = RunStatus {
            rejoining_since_unix_ms: Some(NOW - 1000),
            assigned_partitions: Some(vec![]),
            ..healthy_status()
        };
        assert!(reasons_contain(
            &readiness(&inputs(&rejoining)),
            "rejoining"
        ));
        let unconfirmed = RunStatus {
            membership_unconfirmed_since_unix_ms: Some(NOW - 1000),
            ..healthy_status()
        };
        assert!(reasons_contain(
            &readiness(&inputs(&unconfirmed)),
            "unconfirmed"
        ));

        let stopped = RunStatus {
            running: false,
            last_error: Some("lost the consumer group's partitions".into()),
            ..healthy_status()
        };
        assert!(reasons_contain(
            &liveness(&inputs(&stopped)),
            "pipeline stopped"
        ));
        assert!(!readiness(&inputs(&stopped)).ok);
    }
}
