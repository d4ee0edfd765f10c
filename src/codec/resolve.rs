//! The slow path: a datum written with another TelemetryEvent (or ReviewResult) schema, resolved
//! against the current reader schema by `apache-avro` (Avro's schema-resolution rules: defaults
//! for added fields, enum symbols by name), then converted to the model.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::types::Value;

use super::{DecodeError, SchemaId, parse_schema};
use crate::model::{
    DrivingMode, EventType, ModeTransition, Payload, ReviewResult, RoadType, SafetyEvent, Severity,
    TelemetryEvent, TransitionReason, TripSummary, Weather,
};

/// The most `apache-avro` may allocate for one datum; a corrupt length prefix must not be able to
/// ask for more.
const MAX_ALLOCATION_BYTES: usize = 4 << 20;

fn reader() -> &'static Schema {
    static READER: OnceLock<Schema> = OnceLock::new();
    READER.get_or_init(|| {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        parse_schema(SchemaId::CURRENT_TELEMETRY)
    })
}

/// A datum written with `writer` (a TelemetryEvent schema other than the current one), read
/// with the current schema.
pub(super) fn decode_older(
    writer: &Schema,
    datum: &[u8],
) -> Result<TelemetryEvent<'static>, DecodeError> {
    event_from_value(resolve_datum(writer, reader(), datum)?)
}

/// A datum written with `writer` (a ReviewResult schema other than safetel's), read with
/// safetel's.
pub(super) fn decode_older_review(
    writer: &Schema,
    datum: &[u8],
) -> Result<TelemetryEvent<'static>, DecodeError> {
    static REVIEW_READER: OnceLock<Schema> = OnceLock::new();
    reader(); // sets the allocation limit
    let review_reader = REVIEW_READER.get_or_init(|| parse_schema(SchemaId::ReviewResultV1));
    review_from_value(resolve_datum(writer, review_reader, datum)?)
}

/// The whole of `datum` (written with `writer`) as `reader` reads it.
fn resolve_datum(writer: &Schema, reader: &Schema, datum: &[u8]) -> Result<Value, DecodeError> {
    let mut cursor = datum;
    let value = apache_avro::from_avro_datum(writer, &mut cursor, Some(reader))
        .map_err(|e| DecodeError::Resolution(e.to_string()))?;
    if !cursor.is_empty() {
        return Err(DecodeError::TrailingBytes(cursor.len()));
    }
    Ok(value)
}

fn review_from_value(value: Value) -> Result<TelemetryEvent<'static>, DecodeError> {
    let mut top = Fields::of(value)?;
    let vehicle_id = top.string("vehicle_id")?;
    let event_time_ms = top.long("event_time")?;
    let trip_id = top.string("trip_id")?;
    let items = match top.take("events")? {
        Value::Array(items) => items,
        other => {
            return Err(resolution(format!(
                "field `events`: expected an array, got {other:?}"
            )));
        }
    };
    let mut events = Vec::with_capacity(items.len());
    for item in items {
        let mut f = Fields::of(item)?;
        let time = f.long("event_time")?;
        events.push((
            time,
            SafetyEvent {
                event_id: f.string("event_id")?,
                trip_id: trip_id.clone(),
                event_type: f.symbol("event_type", EventType::from_symbol)?,
                severity: f.symbol("severity", Severity::from_symbol)?,
                speed_kph: f.double("speed_kph")?,
            },
        ));
    }
    Ok(TelemetryEvent {
        vehicle_id,
        event_time_ms,
        payload: Payload::Review(ReviewResult { trip_id, events }),
    })
}

fn resolution(msg: impl Into<String>) -> DecodeError {
    DecodeError::Resolution(msg.into())
}

/// Fields of a resolved record, by name.
struct Fields(HashMap<String, Value>);

impl Fields {
    fn of(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Record(fields) => Ok(Fields(fields.into_iter().collect())),
            other => Err(resolution(format!("expected a record, got {other:?}"))),
        }
    }

    fn take(&mut self, name: &str) -> Result<Value, DecodeError> {
        self.0
            .remove(name)
            .ok_or_else(|| resolution(format!("field `{name}` missing")))
    }

    fn string(&mut self, name: &str) -> Result<Cow<'static, str>, DecodeError> {
        match self.take(name)? {
            Value::String(s) => Ok(Cow::Owned(s)),
            other => Err(resolution(format!(
                "field `{name}`: expected a string, got {other:?}"
            ))),
        }
    }

    fn long(&mut self, name: &str) -> Result<i64, DecodeError> {
        match self.take(name)? {
            Value::Long(v) | Value::TimestampMillis(v) => Ok(v),
            Value::Int(v) => Ok(v.into()),
            other => Err(resolution(format!(
                "field `{name}`: expected a long, got {other:?}"
            ))),
        }
    }

    fn double(&mut self, name: &str) -> Result<f64, DecodeError> {
        match self.take(name)? {
            Value::Double(v) => Ok(v),
            Value::Float(v) => Ok(v.into()),
            other => Err(resolution(format!(
                "field `{name}`: expected a double, got {other:?}"
            ))),
        }
    }

    fn boolean(&mut self, name: &str) -> Result<bool, DecodeError> {
        match self.take(name)? {
            Value::Boolean(v) => Ok(v),
            other => Err(resolution(format!(
                "field `{name}`: expected a boolean, got {other:?}"
            ))),
        }
    }

    fn symbol<T>(&mut self, name: &str, parse: fn(&str) -> Option<T>) -> Result<T, DecodeError> {
        match self.take(name)? {
            Value::Enum(_, symbol) => parse(&symbol)
                .ok_or_else(|| resolution(format!("field `{name}`: unknown symbol {symbol}"))),
            other => Err(resolution(format!(
                "field `{name}`: expected an enum, got {other:?}"
            ))),
        }
    }
}

fn event_from_value(value: Value) -> Result<TelemetryEvent<'static>, DecodeError> {
    let mut top = Fields::of(value)?;
    let vehicle_id = top.string("vehicle_id")?;
    let event_time_ms = top.long("event_time")?;
    let (branch, inner) = match top.take("payload")? {
        Value::Union(branch, inner) => (branch, *inner),
        other => {
            return Err(resolution(format!(
                "payload: expected a union, got {other:?}"
            )));
        }
    };
    let mut f = Fields::of(inner)?;
    let payload = match branch {
        0 => Payload::Trip(TripSummary {
            trip_id: f.string("trip_id")?,
            driver_id: f.string("driver_id")?,
            start_time_ms: f.long("start_time")?,
            end_time_ms: f.long("end_time")?,
            distance_km: f.double("distance_km")?,
            duration_s: f.double("duration_s")?,
            mode: f.symbol("mode", DrivingMode::from_symbol)?,
            road_type: f.symbol("road_type", RoadType::from_symbol)?,
            weather: f.symbol("weather", Weather::from_symbol)?,
            night: f.boolean("night")?,
            firmware_version: f.string("firmware_version")?,
            vehicle_model: f.string("vehicle_model")?,
        }),
        1 => Payload::Safety(SafetyEvent {
            event_id: f.string("event_id")?,
            trip_id: f.string("trip_id")?,
            event_type: f.symbol("event_type", EventType::from_symbol)?,
            severity: f.symbol("severity", Severity::from_symbol)?,
            speed_kph: f.double("speed_kph")?,
        }),
        2 => Payload::Mode(ModeTransition {
            transition_id: f.string("transition_id")?,
            trip_id: f.string("trip_id")?,
            from_mode: f.symbol("from_mode", DrivingMode::from_symbol)?,
            to_mode: f.symbol("to_mode", DrivingMode::from_symbol)?,
            reason: f.symbol("reason", TransitionReason::from_symbol)?,
        }),
        other => {
            return Err(DecodeError::BadIndex {
                name: "payload union",
                index: other.into(),
            });
        }
    };
    Ok(TelemetryEvent {
        vehicle_id,
        event_time_ms,
        payload,
    })
}
