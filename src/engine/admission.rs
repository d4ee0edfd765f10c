//! Admission by time: whether a decoded, valid record may change state, judged from the times it
//! claims and what the broker saw.
//!
//! The rules (README "Time and trust"):
//! - A record's *record time* places it in a bin: a trip's end, any other record's event time.
//! - No claimed time (the event time; a trip's start and end; a review's events) may run more
//!   than `stream.max_clock_skew_s` ahead of the record's timestamp (`future`). The timestamp is
//!   the broker's (or the producer's, with CreateTime); without a plausible one the source gives
//!   its own clock at receipt, and where no source gives one (an engine fed directly) nothing is
//!   checked against it.
//! - A trip is reported when it ends: its event time lies between its end minus the skew and its
//!   end plus the allowed lateness (`invalid` otherwise).
//! - A partition's watermark is the latest record time that `stream.watermark_quorum` of its
//!   vehicles have reached ([`VehicleClocks`]): one vehicle whose clock runs ahead moves it for
//!   nobody, not even as the partition's first. It never goes back. Until the partition has
//!   seen that many vehicles it has none: nothing is late and no bin closes.
//! - A record is `late` if its record time is more than the allowed lateness behind the
//!   watermark, or its bin has closed.
//! - A record id counts as seen while the record time it came with is within the lateness window
//!   of the watermark: whether a copy is a `duplicate` depends on event time alone, never on
//!   where commits fell (they only forget ids that no longer count).

use std::collections::hash_map::Entry;

pub use super::clocks::VehicleClocks;
use super::state::PartitionState;
use crate::codec;
use crate::dead_letter::Rejection;
use crate::hashing::id_hash;
use crate::model::{
    MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, Payload, RecordKind, TelemetryEvent, validate,
};
use crate::partition_id::PartitionId;

/// One record as read from a source.
#[derive(Debug, Clone, Copy)]
pub struct SourceRecord<'a> {
    pub partition: PartitionId,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// When the record was produced (ms since epoch), if the source knows.
    pub timestamp_ms: Option<i64>,
}

/// The dedup key of a record: its kind, vehicle and id, hashed.
pub(crate) fn record_hash(kind: RecordKind, vehicle_id: &str, record_id: &str) -> u64 {
    id_hash(&[
        &[kind as u8],
        vehicle_id.as_bytes(),
        &[0],
        record_id.as_bytes(),
    ])
}

/// The checks that need only the record: its size, its decoding, the event's validity and the
/// times it claims ([`TimeRules::check_claims`]).
pub fn read<'a>(
    record: &SourceRecord<'a>,
    max_record_bytes: usize,
    time: &TimeRules,
) -> Result<TelemetryEvent<'a>, Rejection> {
    if record.payload.len() > max_record_bytes {
        return Err(Rejection::Oversized {
            len: record.payload.len(),
            max: max_record_bytes,
        });
    }
    let event = codec::decode(record.payload)?;
    validate(&event)?;
    time.check_claims(&event, record.timestamp_ms)?;
    Ok(event)
}

/// Where an admitted record counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Its record time ([`TimeRules::record_time`]).
    pub time_ms: i64,
    /// The start of its bin, still open.
    pub bin: i64,
}

/// Admits a read record (not a review result) to its partition: on time (its bin still open)
/// and not a duplicate; it is then seen, its vehicle's clock moves and the partition's
/// watermark with it.
pub fn admit(
    time: &TimeRules,
    partition: &mut PartitionState,
    event: &TelemetryEvent<'_>,
) -> Result<Admitted, Rejection> {
    let record_time = TimeRules::record_time(event);
    let bin = time.check_on_time(partition, record_time)?;
    let hash = record_hash(event.kind(), &event.vehicle_id, event.record_id());
    if !time.see(partition, hash, record_time) {
        return Err(Rejection::Duplicate {
            id: event.record_id().to_string(),
        });
    }
    partition.pending_seen.push((record_time, hash));
    // The vehicle's clock, then the partition's watermark (a quorum of its vehicles' clocks).
    partition
        .clocks
        .observe(&event.vehicle_id, record_time, time.watermark_quorum);
    time.advance_watermark(partition);
    Ok(Admitted {
        time_ms: record_time,
        bin,
    })
}

/// The time rules of one engine, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct TimeRules {
    pub bin_width_ms: i64,
    pub allowed_lateness_ms: i64,
    pub max_clock_skew_ms: i64,
    pub watermark_quorum: usize,
}

impl TimeRules {
    /// The record time of a decoded event: the time that places it in a bin.
    pub fn record_time(event: &TelemetryEvent<'_>) -> i64 {
        match &event.payload {
            Payload::Trip(t) => t.end_time_ms,
            _ => event.event_time_ms,
        }
    }

    /// The checks that need only the record: no claimed time ahead of the record's timestamp
    /// by more than the skew; a trip reported at its end.
    pub fn check_claims(
        &self,
        event: &TelemetryEvent<'_>,
        timestamp_ms: Option<i64>,
    ) -> Result<(), Rejection> {
        if let Some(timestamp_ms) = timestamp_ms {
            let future = |field: &'static str, time_ms: i64| {
                if time_ms > timestamp_ms.saturating_add(self.max_clock_skew_ms) {
                    Err(Rejection::Future {
                        field,
                        time_ms,
                        timestamp_ms,
                        max_skew_ms: self.max_clock_skew_ms,
                    })
                } else {
                    Ok(())
                }
            };
            future("event_time", event.event_time_ms)?;
            match &event.payload {
                // A valid trip starts no later than it ends.
                Payload::Trip(t) => future("end_time", t.end_time_ms)?,
                Payload::Review(r) => {
                    for (time_ms, _) in &r.events {
                        future("events.event_time", *time_ms)?;
                    }
                }
                Payload::Safety(_) | Payload::Mode(_) => {}
            }
        }
        if let Payload::Trip(t) = &event.payload {
            let earliest = t.end_time_ms.saturating_sub(self.max_clock_skew_ms);
            let latest = t.end_time_ms.saturating_add(self.allowed_lateness_ms);
            if !(earliest..=latest).contains(&event.event_time_ms) {
                return Err(Rejection::TripReportedAwayFromEnd {
                    event_time_ms: event.event_time_ms,
                    end_ms: t.end_time_ms,
                    max_skew_ms: self.max_clock_skew_ms,
                    allowed_lateness_ms: self.allowed_lateness_ms,
                });
            }
        }
        Ok(())
    }

    /// Ids whose record time is below this no longer count as seen on the partition.
    pub fn seen_cutoff(&self, partition: &PartitionState) -> i64 {
        partition
            .watermark_ms
            .saturating_sub(self.allowed_lateness_ms)
    }

    /// A record of record time `time_ms` is on time for the partition: not more than the
    /// allowed lateness behind its watermark, and its bin (returned) still open.
    pub fn check_on_time(
        &self,
        partition: &PartitionState,
        time_ms: i64,
    ) -> Result<i64, Rejection> {
        if partition.watermark_ms != i64::MIN && time_ms < self.seen_cutoff(partition) {
            return Err(Rejection::Late {
                event_time_ms: time_ms,
                watermark_ms: partition.watermark_ms,
                allowed_lateness_ms: self.allowed_lateness_ms,
            });
        }
        let bin = time_ms.div_euclid(self.bin_width_ms) * self.bin_width_ms;
        if bin < partition.closed_through_ms {
            return Err(Rejection::BinClosed {
                event_time_ms: time_ms,
                closed_through_ms: partition.closed_through_ms,
            });
        }
        Ok(bin)
    }

    /// Records id `hash` as seen on the partition at record time `time`, unless it was seen
    /// with a record time that still counts (`false`: a duplicate).
    pub fn see(&self, partition: &mut PartitionState, hash: u64, time: i64) -> bool {
        let cutoff = self.seen_cutoff(partition);
        match partition.seen.entry(hash) {
            Entry::Occupied(seen) if *seen.get() >= cutoff => false,
            Entry::Occupied(mut expired) => {
                expired.insert(time);
                true
            }
            Entry::Vacant(new) => {
                new.insert(time);
                true
            }
        }
    }

    /// Moves the partition's watermark after a vehicle's latest record time changed.
    pub fn advance_watermark(&self, partition: &mut PartitionState) {
        let quorum = partition.clocks.watermark(self.watermark_quorum);
        partition.watermark_ms = partition.watermark_ms.max(quorum);
    }
}

/// The timestamp a Kafka record's claimed times are judged against: its Kafka timestamp where
/// that is plausible (within 2000..2100, like event times), so that a replay judges it alike;
/// otherwise (absent, or a producer's dead clock) this host's clock `now_ms` at receipt
/// (`true`: replaced; such a judgement is not replay-stable). With CreateTime the Kafka
/// timestamp is the producer's clock: a topic set to LogAppendTime makes it the broker's.
pub fn reference_timestamp(kafka_ms: Option<i64>, now_ms: i64) -> (i64, bool) {
    match kafka_ms {
        Some(ms) if (MIN_EVENT_TIME_MS..MAX_EVENT_TIME_MS).contains(&ms) => (ms, false),
        _ => (now_ms, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_is_the_time_a_quorum_of_vehicles_reached() {
        let mut clocks = VehicleClocks::default();
        assert_eq!(clocks.watermark(3), i64::MIN);
        clocks.observe("a", 100, 3);
        assert_eq!(
            clocks.watermark(3),
            i64::MIN,
            "one vehicle of a quorum of three"
        );
        clocks.observe("b", 50, 3);
        assert_eq!(
            clocks.watermark(3),
            i64::MIN,
            "two vehicles of a quorum of three"
        );
        clocks.observe("c", 70, 3);
        assert_eq!(clocks.watermark(3), 50, "three: the least advanced");
        // One vehicle races ahead: nothing moves.
        clocks.observe("a", 1_000_000, 3);
        assert_eq!(clocks.watermark(3), 50);
        // An older record of a vehicle changes nothing.
        clocks.observe("c", 60, 3);
        assert_eq!(clocks.watermark(3), 50);
        clocks.observe("b", 80, 3);
        assert_eq!(clocks.watermark(3), 70);
        clocks.observe("d", 90, 3);
        assert_eq!(
            clocks.watermark(3),
            80,
            "four vehicles: the third most advanced"
        );
        clocks.observe("e", 75, 3);
        assert_eq!(clocks.watermark(3), 80, "behind the three most advanced");
        clocks.observe("e", 95, 3);
        assert_eq!(clocks.watermark(3), 90);
        assert_eq!(clocks.watermark(2), 95);
        // Kept incrementally, the few are those a rebuild from every vehicle's latest finds.
        let all = [("a", 1_000_000), ("b", 80), ("c", 70), ("d", 90), ("e", 95)];
        assert_eq!(clocks, VehicleClocks::of(all, 3));
    }

    #[test]
    fn a_usable_kafka_timestamp_is_the_reference_and_anything_else_the_clock() {
        let now = 1_780_000_000_000; // 2026-05-28
        assert_eq!(
            reference_timestamp(Some(now - 5_000), now),
            (now - 5_000, false)
        );
        assert_eq!(reference_timestamp(None, now), (now, true), "absent");
        assert_eq!(
            reference_timestamp(Some(-1), now),
            (now, true),
            "librdkafka's -1"
        );
        assert_eq!(
            reference_timestamp(Some(0), now),
            (now, true),
            "a dead RTC: 1970"
        );
        assert_eq!(
            reference_timestamp(Some(now + 60_000), now),
            (now + 60_000, false),
            "ahead of this host: still the record's own, so that a replay judges it alike"
        );
        assert_eq!(
            reference_timestamp(Some(MAX_EVENT_TIME_MS), now + MAX_EVENT_TIME_MS),
            (now + MAX_EVENT_TIME_MS, true),
            "2100"
        );
    }

    #[test]
    fn the_kept_few_equal_a_rebuild_on_any_stream() {
        // Pseudo-random streams of 30 vehicles: after every record, the incremental clocks
        // equal those rebuilt from every vehicle's latest time (up to the order of ties).
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            state >> 33
        };
        for quorum in [1, 2, 3, 5] {
            let mut clocks = VehicleClocks::default();
            let mut latest: std::collections::BTreeMap<String, i64> = Default::default();
            for step in 0..2000i64 {
                let vehicle = format!("v{}", next() % 30);
                let time = step * 10 - (next() % 500) as i64;
                clocks.observe(&vehicle, time, quorum);
                let l = latest.entry(vehicle).or_insert(time);
                *l = (*l).max(time);
                let rebuilt =
                    VehicleClocks::of(latest.iter().map(|(v, t)| (v.as_str(), *t)), quorum);
                assert_eq!(
                    clocks.watermark(quorum),
                    rebuilt.watermark(quorum),
                    "step {step}"
                );
                let times = |c: &VehicleClocks| c.top.iter().map(|(t, _)| *t).collect::<Vec<_>>();
                assert_eq!(times(&clocks), times(&rebuilt), "step {step}");
            }
        }
    }
}
