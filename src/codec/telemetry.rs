//! The fast path: TelemetryEvent with the current writer schema (id 2), field by field in schema
//! order. The test suite checks it against `apache-avro` and against bytes from Python's fastavro.

use std::borrow::Cow;

use super::DecodeError;
use super::binary::{Reader, write_bool, write_double, write_long, write_string};
use crate::model::{
    DrivingMode, EventType, ModeTransition, Payload, RoadType, SafetyEvent, Severity,
    TelemetryEvent, TransitionReason, TripSummary, Weather,
};

macro_rules! read_enum {
    ($reader:expr, $ty:ident) => {{
        let index = $reader.index(stringify!($ty), $ty::ALL.len())?;
        $ty::from_index(index).expect("index checked against ALL")
    }};
}

pub(super) fn decode_current(datum: &[u8]) -> Result<TelemetryEvent<'_>, DecodeError> {
    let mut r = Reader::new(datum);
    let vehicle_id = Cow::Borrowed(r.string()?);
    let event_time_ms = r.long()?;
    let payload = match r.index("payload union", 3)? {
        0 => Payload::Trip(TripSummary {
            trip_id: Cow::Borrowed(r.string()?),
            driver_id: Cow::Borrowed(r.string()?),
            start_time_ms: r.long()?,
            end_time_ms: r.long()?,
            distance_km: r.double()?,
            duration_s: r.double()?,
            mode: read_enum!(r, DrivingMode),
            road_type: read_enum!(r, RoadType),
            weather: read_enum!(r, Weather),
            night: r.boolean()?,
            firmware_version: Cow::Borrowed(r.string()?),
            vehicle_model: Cow::Borrowed(r.string()?),
        }),
        1 => Payload::Safety(SafetyEvent {
            event_id: Cow::Borrowed(r.string()?),
            trip_id: Cow::Borrowed(r.string()?),
            event_type: read_enum!(r, EventType),
            severity: read_enum!(r, Severity),
            speed_kph: r.double()?,
        }),
        _ => Payload::Mode(ModeTransition {
            transition_id: Cow::Borrowed(r.string()?),
            trip_id: Cow::Borrowed(r.string()?),
            from_mode: read_enum!(r, DrivingMode),
            to_mode: read_enum!(r, DrivingMode),
            reason: read_enum!(r, TransitionReason),
        }),
    };
    r.finish()?;
    Ok(TelemetryEvent {
        vehicle_id,
        event_time_ms,
        payload,
    })
}

pub(super) fn encode_current(event: &TelemetryEvent<'_>, out: &mut Vec<u8>) {
    write_string(&event.vehicle_id, out);
    write_long(event.event_time_ms, out);
    match &event.payload {
        Payload::Trip(t) => {
            write_long(0, out);
            write_string(&t.trip_id, out);
            write_string(&t.driver_id, out);
            write_long(t.start_time_ms, out);
            write_long(t.end_time_ms, out);
            write_double(t.distance_km, out);
            write_double(t.duration_s, out);
            write_long(t.mode.index().into(), out);
            write_long(t.road_type.index().into(), out);
            write_long(t.weather.index().into(), out);
            write_bool(t.night, out);
            write_string(&t.firmware_version, out);
            write_string(&t.vehicle_model, out);
        }
        Payload::Safety(e) => {
            write_long(1, out);
            write_string(&e.event_id, out);
            write_string(&e.trip_id, out);
            write_long(e.event_type.index().into(), out);
            write_long(e.severity.index().into(), out);
            write_double(e.speed_kph, out);
        }
        Payload::Mode(m) => {
            write_long(2, out);
            write_string(&m.transition_id, out);
            write_string(&m.trip_id, out);
            write_long(m.from_mode.index().into(), out);
            write_long(m.to_mode.index().into(), out);
            write_long(m.reason.index().into(), out);
        }
        Payload::Review(_) => unreachable!("review results have a schema of their own"),
    }
}
