//! Semantic checks on a decoded event: what the schema cannot say.

use super::{Payload, TelemetryEvent};

/// Earliest event time accepted: 2000-01-01T00:00:00Z.
pub const MIN_EVENT_TIME_MS: i64 = 946_684_800_000;
/// Latest event time accepted: 2100-01-01T00:00:00Z.
pub const MAX_EVENT_TIME_MS: i64 = 4_102_444_800_000;
/// Longest trip accepted, in seconds (two days).
pub const MAX_TRIP_DURATION_S: f64 = 172_800.0;
/// A trip's claimed `duration_s` may differ from `end - start` by this many seconds...
pub const TRIP_DURATION_TOLERANCE_S: f64 = 60.0;
/// ...or by this share of `end - start`, whichever is larger: rounding to whole seconds or
/// minutes, and a few seconds between ignition and the first GPS fix, stay inside; a claim that
/// inflates or deflates the exposure the detectors divide by does not.
pub const TRIP_DURATION_TOLERANCE_SHARE: f64 = 0.02;
/// Highest plausible speed, km/h.
pub const MAX_SPEED_KPH: f64 = 400.0;
/// Longest id or label accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Why a well-formed record is not a plausible telemetry event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("field `{field}` is empty")]
    Empty { field: &'static str },
    #[error("field `{field}` is longer than {MAX_ID_LEN} bytes")]
    TooLong { field: &'static str },
    #[error("field `{field}` = {value} ms is outside 2000-01-01..2100-01-01")]
    TimeOutOfRange { field: &'static str, value: i64 },
    #[error("field `{field}` = {value} is not a finite number in {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("trip ends ({end_ms}) before it starts ({start_ms})")]
    TripEndsBeforeStart { start_ms: i64, end_ms: i64 },
    #[error(
        "trip claims duration_s = {claimed_s} but runs {span_s} s from start to end (tolerance: {TRIP_DURATION_TOLERANCE_S} s or {TRIP_DURATION_TOLERANCE_SHARE} of the span)"
    )]
    DurationMismatch { claimed_s: f64, span_s: f64 },
    #[error("mode transition from {0} to itself")]
    NoModeChange(&'static str),
    #[error("review result holds {0} events, more than the {MAX_REVIEWED_EVENTS} allowed")]
    TooManyReviewedEvents(usize),
}

/// Most events one review result may carry.
pub const MAX_REVIEWED_EVENTS: usize = 1000;

fn text(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if value.len() > MAX_ID_LEN {
        return Err(ValidationError::TooLong { field });
    }
    Ok(())
}

fn time(field: &'static str, value: i64) -> Result<(), ValidationError> {
    if (MIN_EVENT_TIME_MS..MAX_EVENT_TIME_MS).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::TimeOutOfRange { field, value })
    }
}

fn number(field: &'static str, value: f64, min: f64, max: f64) -> Result<(), ValidationError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

/// Checks an event; `Ok` means it may update state.
pub fn validate(event: &TelemetryEvent<'_>) -> Result<(), ValidationError> {
    text("vehicle_id", &event.vehicle_id)?;
    time("event_time", event.event_time_ms)?;
    match &event.payload {
        Payload::Trip(t) => {
            text("trip_id", &t.trip_id)?;
            text("driver_id", &t.driver_id)?;
            text("firmware_version", &t.firmware_version)?;
            text("vehicle_model", &t.vehicle_model)?;
            time("start_time", t.start_time_ms)?;
            time("end_time", t.end_time_ms)?;
            if t.end_time_ms < t.start_time_ms {
                return Err(ValidationError::TripEndsBeforeStart {
                    start_ms: t.start_time_ms,
                    end_ms: t.end_time_ms,
                });
            }
            number("duration_s", t.duration_s, 0.0, MAX_TRIP_DURATION_S)?;
            let span_s = (t.end_time_ms - t.start_time_ms) as f64 / 1000.0;
            let tolerance_s = TRIP_DURATION_TOLERANCE_S.max(TRIP_DURATION_TOLERANCE_SHARE * span_s);
            if (t.duration_s - span_s).abs() > tolerance_s {
                return Err(ValidationError::DurationMismatch {
                    claimed_s: t.duration_s,
                    span_s,
                });
            }
            number(
                "distance_km",
                t.distance_km,
                0.0,
                MAX_SPEED_KPH * MAX_TRIP_DURATION_S / 3600.0,
            )?;
        }
        Payload::Safety(e) => {
            text("event_id", &e.event_id)?;
            text("trip_id", &e.trip_id)?;
            number("speed_kph", e.speed_kph, 0.0, MAX_SPEED_KPH)?;
        }
        Payload::Mode(m) => {
            text("transition_id", &m.transition_id)?;
            text("trip_id", &m.trip_id)?;
            if m.from_mode == m.to_mode {
                return Err(ValidationError::NoModeChange(m.from_mode.symbol()));
            }
        }
        Payload::Review(r) => {
            text("trip_id", &r.trip_id)?;
            if r.events.len() > MAX_REVIEWED_EVENTS {
                return Err(ValidationError::TooManyReviewedEvents(r.events.len()));
            }
            for (event_time, e) in &r.events {
                time("events.event_time", *event_time)?;
                text("events.event_id", &e.event_id)?;
                number("events.speed_kph", e.speed_kph, 0.0, MAX_SPEED_KPH)?;
            }
        }
    }
    Ok(())
}
