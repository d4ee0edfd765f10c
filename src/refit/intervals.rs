//! A vehicle's survival intervals from its telemetry: exposure hours between consecutive
//! critical events, and the open interval at the end (censored).
//!
//! Exposure runs only while driving: a critical event during a trip sits at the exposure
//! accumulated before the trip plus the time into it (capped at the trip's recorded duration);
//! an event outside every trip sits where the exposure stood then. Intervals shorter than
//! [`MIN_INTERVAL_HOURS`] (two events at the same moment of driving) are lengthened to it, so that
//! every duration is positive.

use crate::codec::{Reader, write_long};
use crate::model::{Payload, TelemetryEvent, exposure_ms};

/// One second of driving.
pub const MIN_INTERVAL_HOURS: f64 = 1.0 / 3600.0;

/// What the intervals are made of, gathered per vehicle.
#[derive(Debug, Default, Clone)]
pub struct VehicleTimeline {
    /// (start ms, end ms, exposure ms) of each trip.
    trips: Vec<(i64, i64, u64)>,
    /// Event times (ms) of critical events.
    critical: Vec<i64>,
}

/// What one record adds to a vehicle's timeline: the refit's sufficient statistics, kept in
/// the state (a few bytes each, [`TimelineItem::encode`]) in place of the records themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineItem {
    Trip {
        start_ms: i64,
        end_ms: i64,
        exposure_ms: u64,
    },
    Critical {
        time_ms: i64,
    },
}

impl TimelineItem {
    /// The items of one accepted record: a trip, or its critical events (one for a safety
    /// event, any number for a review service's result); none for anything else.
    pub fn of(event: &TelemetryEvent<'_>) -> Vec<TimelineItem> {
        match &event.payload {
            Payload::Trip(t) => vec![TimelineItem::Trip {
                start_ms: t.start_time_ms,
                end_ms: t.end_time_ms,
                exposure_ms: exposure_ms(t.duration_s),
            }],
            Payload::Safety(s) if s.is_critical() => vec![TimelineItem::Critical {
                time_ms: event.event_time_ms,
            }],
            Payload::Review(r) => r
                .events
                .iter()
                .filter(|(_, e)| e.is_critical())
                .map(|(time, _)| TimelineItem::Critical { time_ms: *time })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// When the item happened, for the refit's window: a trip's end, an event's time.
    pub fn time_ms(&self) -> i64 {
        match self {
            TimelineItem::Trip { end_ms, .. } => *end_ms,
            TimelineItem::Critical { time_ms } => *time_ms,
        }
    }

    /// Appends the item, its times relative to `base_ms` (the start of the bin it is kept
    /// under), as zig-zag varints: a tag, then start, length and exposure of a trip or the
    /// time of an event. Typically 9 bytes for a trip, 4 for an event.
    pub fn encode(&self, base_ms: i64, out: &mut Vec<u8>) {
        match *self {
            TimelineItem::Trip {
                start_ms,
                end_ms,
                exposure_ms,
            } => {
                write_long(0, out);
                write_long(start_ms.wrapping_sub(base_ms), out);
                write_long(end_ms.wrapping_sub(start_ms), out);
                write_long(exposure_ms as i64, out);
            }
            TimelineItem::Critical { time_ms } => {
                write_long(1, out);
                write_long(time_ms.wrapping_sub(base_ms), out);
            }
        }
    }

    /// The items [`TimelineItem::encode`] wrote one after another; `None` for a damaged or
    /// unknown entry (the rest is not read).
    pub fn decode_all(bytes: &[u8], base_ms: i64) -> impl Iterator<Item = Option<TimelineItem>> {
        let mut reader = Reader::new(bytes);
        let mut damaged = false;
        std::iter::from_fn(move || {
            if damaged || reader.position() >= bytes.len() {
                return None;
            }
            let item = Self::decode_one(&mut reader, base_ms);
            damaged = item.is_none();
            Some(item)
        })
    }

    fn decode_one(reader: &mut Reader<'_>, base_ms: i64) -> Option<TimelineItem> {
        let tag = reader.long().ok()?;
        match tag {
            0 => {
                let start_ms = base_ms.wrapping_add(reader.long().ok()?);
                let end_ms = start_ms.wrapping_add(reader.long().ok()?);
                let exposure_ms = u64::try_from(reader.long().ok()?).ok()?;
                Some(TimelineItem::Trip {
                    start_ms,
                    end_ms,
                    exposure_ms,
                })
            }
            1 => Some(TimelineItem::Critical {
                time_ms: base_ms.wrapping_add(reader.long().ok()?),
            }),
            _ => None,
        }
    }
}

impl VehicleTimeline {
    /// Takes one accepted record of the vehicle (any order).
    pub fn add(&mut self, event: &TelemetryEvent<'_>) {
        for item in TimelineItem::of(event) {
            self.add_item(item);
        }
    }

    /// Takes one item of the vehicle's timeline (any order).
    pub fn add_item(&mut self, item: TimelineItem) {
        match item {
            TimelineItem::Trip {
                start_ms,
                end_ms,
                exposure_ms,
            } => self.trips.push((start_ms, end_ms, exposure_ms)),
            TimelineItem::Critical { time_ms } => self.critical.push(time_ms),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.trips.is_empty()
    }

    /// (duration hours, event) in time order; the last one censored. Empty without exposure.
    pub fn intervals(mut self) -> Vec<(f64, bool)> {
        self.trips.sort_unstable();
        self.critical.sort_unstable();
        let total_ms: u64 = self.trips.iter().map(|t| t.2).sum();
        if total_ms == 0 {
            return Vec::new();
        }
        // Exposure (ms) at each critical event.
        let mut positions = Vec::with_capacity(self.critical.len());
        let (mut trip, mut before_ms) = (0usize, 0u64);
        for &time in &self.critical {
            while trip < self.trips.len() && self.trips[trip].1 <= time {
                before_ms += self.trips[trip].2;
                trip += 1;
            }
            let into = match self.trips.get(trip) {
                Some(&(start, _, exposure)) if start <= time => {
                    ((time - start).max(0) as u64).min(exposure)
                }
                _ => 0,
            };
            positions.push(before_ms + into);
        }
        let hours = |ms: u64| (ms as f64 / 3_600_000.0).max(MIN_INTERVAL_HOURS);
        let mut out = Vec::with_capacity(positions.len() + 1);
        let mut last = 0u64;
        for position in positions {
            out.push((hours(position.saturating_sub(last)), true));
            last = position;
        }
        out.push((hours(total_ms.saturating_sub(last)), false));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::model::*;

    const H: i64 = 3_600_000;

    fn trip(start: i64, hours: f64) -> TelemetryEvent<'static> {
        TelemetryEvent {
            vehicle_id: "v".into(),
            event_time_ms: start + (hours * H as f64) as i64,
            payload: Payload::Trip(TripSummary {
                trip_id: Cow::Owned(format!("t{start}")),
                driver_id: "d".into(),
                start_time_ms: start,
                end_time_ms: start + (hours * H as f64) as i64,
                distance_km: 1.0,
                duration_s: hours * 3600.0,
                mode: DrivingMode::Manual,
                road_type: RoadType::Urban,
                weather: Weather::Clear,
                night: false,
                firmware_version: "f".into(),
                vehicle_model: "m".into(),
            }),
        }
    }

    fn event(time: i64, event_type: EventType) -> TelemetryEvent<'static> {
        TelemetryEvent {
            vehicle_id: "v".into(),
            event_time_ms: time,
            payload: Payload::Safety(SafetyEvent {
                event_id: Cow::Owned(format!("e{time}")),
                trip_id: "t".into(),
                event_type,
                severity: Severity::Low,
                speed_kph: 30.0,
            }),
        }
    }

    #[test]
    fn intervals_measure_driving_time_between_critical_events() {
        let mut timeline = VehicleTimeline::default();
        // Trips: 2 h from hour 0, 3 h from hour 10, 1 h from hour 20 (6 h in all).
        for e in [
            event(11 * H, EventType::NearMiss), // 1 h into trip 2: exposure 3 h
            trip(10 * H, 3.0),
            event(H, EventType::Collision), // 1 h into trip 1: exposure 1 h
            event(H + 1000, EventType::HardBrake), // not critical
            trip(0, 2.0),
            event(15 * H, EventType::NearMiss), // between trips: exposure 5 h
            trip(20 * H, 1.0),
        ] {
            timeline.add(&e);
        }
        let intervals = timeline.intervals();
        let rounded: Vec<(f64, bool)> = intervals
            .iter()
            .map(|(h, d)| ((h * 1000.0).round() / 1000.0, *d))
            .collect();
        assert_eq!(
            rounded,
            vec![(1.0, true), (2.0, true), (2.0, true), (1.0, false)]
        );
        let total: f64 = intervals.iter().map(|i| i.0).sum();
        assert!(
            (total - 6.0).abs() < 1e-9,
            "intervals add up to the exposure"
        );
    }

    #[test]
    fn simultaneous_events_get_a_positive_interval_and_no_trips_none() {
        let mut timeline = VehicleTimeline::default();
        timeline.add(&trip(0, 1.0));
        timeline.add(&event(H / 2, EventType::NearMiss));
        timeline.add(&event(H / 2, EventType::Collision));
        let intervals = timeline.intervals();
        assert_eq!(intervals.len(), 3);
        assert_eq!(intervals[1], (MIN_INTERVAL_HOURS, true));
        let mut empty = VehicleTimeline::default();
        empty.add(&event(5, EventType::NearMiss));
        assert!(empty.intervals().is_empty());
    }

    #[test]
    fn timeline_items_read_back_as_written_in_a_few_bytes() {
        let bin = 1_767_571_200_000;
        let items = [
            TimelineItem::Trip {
                start_ms: bin - 2 * H,
                end_ms: bin + 5 * H,
                exposure_ms: 7 * H as u64 - 1234,
            },
            TimelineItem::Critical {
                time_ms: bin + 3 * H,
            },
            TimelineItem::Critical { time_ms: bin - 1 },
            TimelineItem::Trip {
                start_ms: bin,
                end_ms: bin,
                exposure_ms: 0,
            },
        ];
        let mut bytes = Vec::new();
        for item in &items {
            item.encode(bin, &mut bytes);
        }
        assert!(bytes.len() <= 30, "{} bytes for four items", bytes.len());
        let read: Vec<_> = TimelineItem::decode_all(&bytes, bin).collect();
        assert_eq!(read, items.map(Some).to_vec());
        // Damage shows as `None`, and reading stops there.
        let read: Vec<_> = TimelineItem::decode_all(&[9, 0, 0], bin).collect();
        assert_eq!(read, vec![None]);
        // The items of a record are what the intervals take from it.
        let (t, e) = (trip(0, 2.0), event(H, EventType::Collision));
        assert_eq!(TimelineItem::of(&t).len(), 1);
        assert_eq!(
            TimelineItem::of(&e),
            vec![TimelineItem::Critical { time_ms: H }]
        );
        assert!(TimelineItem::of(&event(H, EventType::HardBrake)).is_empty());
    }
}
