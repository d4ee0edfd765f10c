//! Dead letters: why a record did not update state ([`Rejection`], with the short reason its
//! DLQ header and metric label carry), and the outcomes of the last records a process handled
//! ([`RecentOutcomes`]): how many went to the dead-letter topic, why, and from which partitions.
//! `/health` turns unhealthy while the share is above `stream.max_dlq_share`, so that a
//! partition whose records are all being dropped (a bad clock, a producer sending another
//! schema) is visible and not only counted. Pure data: the engine decides, the edges send.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::codec::DecodeError;
use crate::model::ValidationError;

/// Why a record did not update state. Each goes to the dead-letter topic with its reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("record is {len} bytes, more than the {max} allowed")]
    Oversized { len: usize, max: usize },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("invalid event: {0}")]
    Invalid(#[from] ValidationError),
    #[error(
        "record time {event_time_ms} is more than {allowed_lateness_ms} ms behind the watermark {watermark_ms}"
    )]
    Late {
        event_time_ms: i64,
        watermark_ms: i64,
        allowed_lateness_ms: i64,
    },
    #[error(
        "`{field}` = {time_ms} is more than {max_skew_ms} ms ahead of the record's timestamp {timestamp_ms}"
    )]
    Future {
        field: &'static str,
        time_ms: i64,
        timestamp_ms: i64,
        max_skew_ms: i64,
    },
    #[error(
        "trip reported at {event_time_ms}, not at its end {end_ms} (from {max_skew_ms} ms before to {allowed_lateness_ms} ms after it)"
    )]
    TripReportedAwayFromEnd {
        event_time_ms: i64,
        end_ms: i64,
        max_skew_ms: i64,
        allowed_lateness_ms: i64,
    },
    #[error(
        "record time {event_time_ms} falls in a bin already closed (bins before {closed_through_ms})"
    )]
    BinClosed {
        event_time_ms: i64,
        closed_through_ms: i64,
    },
    #[error("cohort report on the repartition topic: {0}")]
    CohortReport(String),
    #[error("duplicate of an earlier record with id `{id}`")]
    Duplicate { id: String },
    #[error(
        "review result for trip `{trip_id}`, whose review is not awaited (never requested, already answered, or timed out)"
    )]
    UnrequestedReview { trip_id: String },
    #[error(
        "review result for trip `{trip_id}` holds an event at {event_time_ms}, outside the trip ({start_ms}..={end_ms})"
    )]
    ReviewedEventOutsideTrip {
        trip_id: String,
        event_time_ms: i64,
        start_ms: i64,
        end_ms: i64,
    },
    #[error("vehicle `{vehicle_id}` left memory and its state could not be read back: {detail}")]
    StateUnavailable { vehicle_id: String, detail: String },
}

impl Rejection {
    /// The short reason carried in the DLQ header `reason` and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Oversized { .. } => "oversized",
            Rejection::Decode(e) => e.reason(),
            Rejection::CohortReport(_) => "decode",
            Rejection::Invalid(_) => "invalid",
            Rejection::Late { .. } | Rejection::BinClosed { .. } => "late",
            Rejection::Future { .. } => "future",
            Rejection::TripReportedAwayFromEnd { .. } => "invalid",
            Rejection::Duplicate { .. } => "duplicate",
            Rejection::UnrequestedReview { .. } => "unrequested_review",
            Rejection::ReviewedEventOutsideTrip { .. } => "invalid",
            Rejection::StateUnavailable { .. } => "state_unavailable",
        }
    }

    pub const REASONS: [&'static str; 12] = [
        "oversized",
        "schema",
        "incompatible_schema",
        "schema_registry",
        "decode",
        "invalid",
        "future",
        "late",
        "duplicate",
        "unrequested_review",
        "state_unavailable",
        "other",
    ];
}

/// The share is judged once the window holds this many records (or is full, if smaller): a
/// first bad record is not an outage.
const MIN_RECORDS_JUDGED: usize = 100;

/// The last `window` records' outcomes, as a ring.
#[derive(Debug, Clone)]
pub struct RecentOutcomes {
    window: usize,
    max_share: f64,
    /// (reason index + 1, or 0 for accepted; partition), oldest first.
    ring: VecDeque<(u8, i32)>,
    by_reason: [u32; Rejection::REASONS.len()],
    by_partition: BTreeMap<i32, u32>,
}

/// What [`RecentOutcomes`] says at one moment: for `/health` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeadLetterShare {
    /// Records in the window.
    pub records: u64,
    pub dead_lettered: u64,
    pub share: f64,
    pub max_share: f64,
    /// The share is above `max_share` (with enough records to judge).
    pub alarm: bool,
    /// (reason, records) with any, most first.
    pub reasons: Vec<(&'static str, u64)>,
    /// (partition, dead-lettered records) with any, most first.
    pub partitions: Vec<(i32, u64)>,
}

impl RecentOutcomes {
    pub fn new(window: usize, max_share: f64) -> RecentOutcomes {
        RecentOutcomes {
            window: window.max(1),
            max_share,
            ring: VecDeque::with_capacity(window.max(1)),
            by_reason: [0; Rejection::REASONS.len()],
            by_partition: BTreeMap::new(),
        }
    }

    /// One record of `partition` handled: accepted (`None`) or dead-lettered with `reason`.
    pub fn push(&mut self, partition: i32, reason: Option<&'static str>) {
        if self.ring.len() == self.window {
            let (code, p) = self.ring.pop_front().expect("full");
            if code > 0 {
                self.by_reason[usize::from(code - 1)] -= 1;
                if let Some(count) = self.by_partition.get_mut(&p) {
                    *count -= 1;
                    if *count == 0 {
                        self.by_partition.remove(&p);
                    }
                }
            }
        }
        let code = match reason {
            None => 0,
            Some(reason) => {
                let index = Rejection::REASONS
                    .iter()
                    .position(|r| *r == reason)
                    .unwrap_or(Rejection::REASONS.len() - 1);
                self.by_reason[index] += 1;
                *self.by_partition.entry(partition).or_default() += 1;
                index as u8 + 1
            }
        };
        self.ring.push_back((code, partition));
    }

    pub fn snapshot(&self) -> DeadLetterShare {
        let records = self.ring.len() as u64;
        let dead_lettered: u64 = self.by_reason.iter().map(|&n| u64::from(n)).sum();
        let share = if records == 0 {
            0.0
        } else {
            dead_lettered as f64 / records as f64
        };
        let mut reasons: Vec<(&'static str, u64)> = Rejection::REASONS
            .iter()
            .zip(self.by_reason)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, u64::from(n)))
            .collect();
        reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let mut partitions: Vec<(i32, u64)> = self
            .by_partition
            .iter()
            .map(|(p, n)| (*p, u64::from(*n)))
            .collect();
        partitions.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let judged = self.ring.len() >= MIN_RECORDS_JUDGED.min(self.window);
        DeadLetterShare {
            records,
            dead_lettered,
            share,
            max_share: self.max_share,
            alarm: judged && share > self.max_share,
            reasons,
            partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_counts_only_the_last_window_of_records() {
        let mut recent = RecentOutcomes::new(200, 0.05);
        for _ in 0..150 {
            recent.push(0, None);
        }
        for _ in 0..50 {
            recent.push(3, Some("late"));
        }
        recent.push(1, Some("future"));
        let now = recent.snapshot();
        assert_eq!((now.records, now.dead_lettered), (200, 51));
        assert!(now.alarm, "{now:?}");
        assert_eq!(now.reasons, [("late", 50), ("future", 1)]);
        assert_eq!(now.partitions, [(3, 50), (1, 1)]);
        // 200 good records push every bad one out of the window.
        for _ in 0..200 {
            recent.push(0, None);
        }
        let later = recent.snapshot();
        assert_eq!((later.dead_lettered, later.alarm), (0, false));
        assert!(later.reasons.is_empty() && later.partitions.is_empty());
    }

    #[test]
    fn a_first_bad_record_is_not_judged_an_outage() {
        let mut recent = RecentOutcomes::new(10_000, 0.05);
        recent.push(0, Some("decode"));
        for _ in 0..(MIN_RECORDS_JUDGED - 2) {
            recent.push(0, None);
        }
        assert!(!recent.snapshot().alarm, "99 records: not judged yet");
        recent.push(0, Some("decode"));
        let judged = recent.snapshot();
        assert!(!judged.alarm, "2 of 100 is under 5%: {judged:?}");
        for _ in 0..4 {
            recent.push(0, Some("schema"));
        }
        assert!(recent.snapshot().alarm, "6 of 104 is over 5%");
    }
}
