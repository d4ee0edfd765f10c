//! The review loop's records: `ReviewRequest` (schema id 4, on `review.requests`) and
//! `ReviewResult` (schema id 5, on the telemetry topic), field by field in schema order.

use std::borrow::Cow;

use super::binary::{Reader, write_double, write_long, write_string};
use super::{DecodeError, SchemaId, split_header, write_header};
use crate::model::{EventType, Payload, ReviewRequest, ReviewResult, SafetyEvent, Severity};
use crate::model::{MAX_REVIEWED_EVENTS, TelemetryEvent};

/// Encodes a request with its Confluent header, appending to `out`.
pub fn encode_review_request(request: &ReviewRequest, out: &mut Vec<u8>) {
    write_header(SchemaId::ReviewRequestV1, out);
    write_string(&request.trip_id, out);
    write_string(&request.vehicle_id, out);
    write_long(request.trip_start_ms, out);
    write_long(request.trip_end_ms, out);
    write_double(request.inclusion_probability, out);
    write_string(&request.policy, out);
}

/// Decodes a framed request (what the review service reads).
pub fn decode_review_request(bytes: &[u8]) -> Result<ReviewRequest, DecodeError> {
    let (id, datum) = split_header(bytes)?;
    if id != super::writers::output_id(SchemaId::ReviewRequestV1) {
        return Err(DecodeError::UnknownSchemaId(id));
    }
    let mut r = Reader::new(datum);
    let request = ReviewRequest {
        trip_id: r.string()?.to_string(),
        vehicle_id: r.string()?.to_string(),
        trip_start_ms: r.long()?,
        trip_end_ms: r.long()?,
        inclusion_probability: r.double()?,
        policy: r.string()?.to_string(),
    };
    r.finish()?;
    Ok(request)
}

/// The datum of a result (after its header): vehicle, trip end, trip id, events.
pub(super) fn encode_result(
    vehicle_id: &str,
    time_ms: i64,
    result: &ReviewResult<'_>,
    out: &mut Vec<u8>,
) {
    write_string(vehicle_id, out);
    write_long(time_ms, out);
    write_string(&result.trip_id, out);
    if !result.events.is_empty() {
        write_long(result.events.len() as i64, out);
        for (time, e) in &result.events {
            write_long(*time, out);
            write_string(&e.event_id, out);
            write_long(e.event_type.index().into(), out);
            write_long(e.severity.index().into(), out);
            write_double(e.speed_kph, out);
        }
    }
    write_long(0, out);
}

pub(super) fn decode_result(datum: &[u8]) -> Result<TelemetryEvent<'_>, DecodeError> {
    let mut r = Reader::new(datum);
    let vehicle_id = Cow::Borrowed(r.string()?);
    let event_time_ms = r.long()?;
    let trip_id = r.string()?;
    let mut events = Vec::new();
    loop {
        // Avro array blocks: a count (negative: followed by the block's size in bytes), 0 ends.
        let at = r.position();
        let mut count = r.long()?;
        if count == 0 {
            break;
        }
        if count < 0 {
            count = count
                .checked_neg()
                .ok_or(DecodeError::NegativeLength { len: count, at })?;
            r.long()?;
        }
        // Validation rejects more; refusing here keeps a hostile count from allocating.
        if count as u64 > (MAX_REVIEWED_EVENTS as u64).saturating_sub(events.len() as u64) + 1 {
            return Err(DecodeError::BadIndex {
                name: "review events count",
                index: count,
            });
        }
        for _ in 0..count {
            let time = r.long()?;
            let event_id = Cow::Borrowed(r.string()?);
            let event_type = EventType::from_index(r.index("EventType", EventType::ALL.len())?)
                .expect("index checked against ALL");
            let severity = Severity::from_index(r.index("Severity", Severity::ALL.len())?)
                .expect("index checked against ALL");
            let speed_kph = r.double()?;
            let event = SafetyEvent {
                event_id,
                trip_id: Cow::Borrowed(trip_id),
                event_type,
                severity,
                speed_kph,
            };
            events.push((time, event));
        }
    }
    r.finish()?;
    Ok(TelemetryEvent {
        vehicle_id,
        event_time_ms,
        payload: Payload::Review(ReviewResult {
            trip_id: Cow::Borrowed(trip_id),
            events,
        }),
    })
}
