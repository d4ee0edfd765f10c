//! Bytes written by an independent Avro implementation (Python's fastavro, see
//! scripts/make-fastavro-fixture.py) decode to the same values.

use safetel::codec::decode;
use safetel::model::{Payload, TelemetryEvent};
use serde_json::{Value, json};

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The decoded event in the fixture's JSON shape.
fn as_json(event: &TelemetryEvent<'_>) -> Value {
    let payload = match &event.payload {
        Payload::Trip(t) => json!({
            "branch": "TripSummary", "trip_id": t.trip_id, "driver_id": t.driver_id,
            "start_time": t.start_time_ms, "end_time": t.end_time_ms, "distance_km": t.distance_km,
            "duration_s": t.duration_s, "mode": t.mode.symbol(), "road_type": t.road_type.symbol(),
            "weather": t.weather.symbol(), "night": t.night, "firmware_version": t.firmware_version,
            "vehicle_model": t.vehicle_model,
        }),
        Payload::Safety(e) => json!({
            "branch": "SafetyEvent", "event_id": e.event_id, "trip_id": e.trip_id,
            "event_type": e.event_type.symbol(), "severity": e.severity.symbol(), "speed_kph": e.speed_kph,
        }),
        Payload::Mode(m) => json!({
            "branch": "ModeTransition", "transition_id": m.transition_id, "trip_id": m.trip_id,
            "from_mode": m.from_mode.symbol(), "to_mode": m.to_mode.symbol(), "reason": m.reason.symbol(),
        }),
        Payload::Review(r) => panic!("the fixtures hold no review results: {r:?}"),
    };
    json!({"vehicle_id": event.vehicle_id, "event_time": event.event_time_ms, "payload": payload})
}

#[test]
fn fastavro_written_records_decode_identically() {
    let fixture = include_str!("fixtures/fastavro_records.jsonl");
    let mut seen = 0;
    for line in fixture.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let bytes = unhex(case["framed_hex"].as_str().unwrap());
        let event = decode(&bytes).unwrap_or_else(|e| panic!("fixture {line}: {e}"));
        let mut expected = case["record"].clone();
        if case["schema_id"] == 1 {
            // Written before vehicle_model existed: the reader schema's default applies.
            expected["payload"]["vehicle_model"] = json!("unknown");
        }
        assert_eq!(as_json(&event), expected);
        seen += 1;
    }
    assert_eq!(seen, 4, "every fixture record was checked");
}
