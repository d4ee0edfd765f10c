use std::borrow::Cow;

use apache_avro::types::Value;
use proptest::prelude::*;

use super::*;
use crate::model::*;

fn trip() -> TelemetryEvent<'static> {
    TelemetryEvent {
        vehicle_id: "veh-1".into(),
        event_time_ms: 1_767_229_200_000,
        payload: Payload::Trip(TripSummary {
            trip_id: "trip-1".into(),
            driver_id: "drv-1".into(),
            start_time_ms: 1_767_225_600_000,
            end_time_ms: 1_767_229_200_000,
            distance_km: 42.5,
            duration_s: 3600.0,
            mode: DrivingMode::Autonomous,
            road_type: RoadType::Rural,
            weather: Weather::Fog,
            night: true,
            firmware_version: "fw-1.2".into(),
            vehicle_model: "m-3".into(),
        }),
    }
}

fn safety() -> TelemetryEvent<'static> {
    TelemetryEvent {
        vehicle_id: "veh-2".into(),
        event_time_ms: 1_767_229_000_000,
        payload: Payload::Safety(SafetyEvent {
            event_id: "ev-1".into(),
            trip_id: "trip-1".into(),
            event_type: EventType::Collision,
            severity: Severity::Critical,
            speed_kph: 31.0,
        }),
    }
}

fn mode() -> TelemetryEvent<'static> {
    TelemetryEvent {
        vehicle_id: "veh-3".into(),
        event_time_ms: 1_767_228_000_000,
        payload: Payload::Mode(ModeTransition {
            transition_id: "mt-1".into(),
            trip_id: "trip-9".into(),
            from_mode: DrivingMode::Autonomous,
            to_mode: DrivingMode::Manual,
            reason: TransitionReason::DriverInitiated,
        }),
    }
}

fn samples() -> Vec<TelemetryEvent<'static>> {
    vec![trip(), safety(), mode()]
}

/// An `apache-avro` record value from (field, value) pairs in schema order.
fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The same event as an `apache-avro` value of the current schema.
fn to_value(event: &TelemetryEvent<'_>) -> Value {
    let s = |v: &Cow<'_, str>| Value::String(v.to_string());
    let e = |index: u32, symbol: &str| Value::Enum(index, symbol.to_string());
    let (branch, fields) = match &event.payload {
        Payload::Trip(t) => (
            0,
            vec![
                ("trip_id", s(&t.trip_id)),
                ("driver_id", s(&t.driver_id)),
                ("start_time", Value::TimestampMillis(t.start_time_ms)),
                ("end_time", Value::TimestampMillis(t.end_time_ms)),
                ("distance_km", Value::Double(t.distance_km)),
                ("duration_s", Value::Double(t.duration_s)),
                ("mode", e(t.mode.index(), t.mode.symbol())),
                ("road_type", e(t.road_type.index(), t.road_type.symbol())),
                ("weather", e(t.weather.index(), t.weather.symbol())),
                ("night", Value::Boolean(t.night)),
                ("firmware_version", s(&t.firmware_version)),
                ("vehicle_model", s(&t.vehicle_model)),
            ],
        ),
        Payload::Safety(ev) => (
            1,
            vec![
                ("event_id", s(&ev.event_id)),
                ("trip_id", s(&ev.trip_id)),
                (
                    "event_type",
                    e(ev.event_type.index(), ev.event_type.symbol()),
                ),
                ("severity", e(ev.severity.index(), ev.severity.symbol())),
                ("speed_kph", Value::Double(ev.speed_kph)),
            ],
        ),
        Payload::Mode(m) => (
            2,
            vec![
                ("transition_id", s(&m.transition_id)),
                ("trip_id", s(&m.trip_id)),
                ("from_mode", e(m.from_mode.index(), m.from_mode.symbol())),
                ("to_mode", e(m.to_mode.index(), m.to_mode.symbol())),
                ("reason", e(m.reason.index(), m.reason.symbol())),
            ],
        ),
        Payload::Review(_) => panic!("review results have a schema of their own"),
    };
    record(vec![
        ("vehicle_id", s(&event.vehicle_id)),
        ("event_time", Value::TimestampMillis(event.event_time_ms)),
        ("payload", Value::Union(branch, Box::new(record(fields)))),
    ])
}

#[test]
fn round_trip_every_payload_kind() {
    for event in samples() {
        let bytes = encode_to_vec(&event);
        assert_eq!(
            &bytes[..5],
            &[0, 0, 0, 0, 2],
            "Confluent header with schema id 2"
        );
        assert_eq!(decode(&bytes).unwrap(), event);
    }
}

fn review_result(events: usize) -> TelemetryEvent<'static> {
    TelemetryEvent {
        vehicle_id: "veh-1".into(),
        event_time_ms: 1_767_229_200_000,
        payload: Payload::Review(ReviewResult {
            trip_id: "trip-1".into(),
            events: (0..events)
                .map(|i| {
                    let event = SafetyEvent {
                        event_id: format!("ev-{i}").into(),
                        trip_id: "trip-1".into(),
                        event_type: EventType::ALL[i % EventType::ALL.len()],
                        severity: Severity::ALL[i % Severity::ALL.len()],
                        speed_kph: 10.0 * i as f64,
                    };
                    (1_767_225_600_000 + i as i64 * 1000, event)
                })
                .collect(),
        }),
    }
}

/// A review result as an `apache-avro` value of `review_result.avsc`.
fn review_value(event: &TelemetryEvent<'_>) -> Value {
    let Payload::Review(r) = &event.payload else {
        panic!("not a review result");
    };
    let items = r
        .events
        .iter()
        .map(|(time, e)| {
            record(vec![
                ("event_time", Value::TimestampMillis(*time)),
                ("event_id", Value::String(e.event_id.to_string())),
                (
                    "event_type",
                    Value::Enum(e.event_type.index(), e.event_type.symbol().into()),
                ),
                (
                    "severity",
                    Value::Enum(e.severity.index(), e.severity.symbol().into()),
                ),
                ("speed_kph", Value::Double(e.speed_kph)),
            ])
        })
        .collect();
    record(vec![
        ("vehicle_id", Value::String(event.vehicle_id.to_string())),
        ("event_time", Value::TimestampMillis(event.event_time_ms)),
        ("trip_id", Value::String(r.trip_id.to_string())),
        ("events", Value::Array(items)),
    ])
}

#[test]
fn review_results_match_apache_avro_and_round_trip() {
    let schema = parse_schema(SchemaId::ReviewResultV1);
    for n in [0, 1, 7] {
        let event = review_result(n);
        let ours = encode_to_vec(&event);
        assert_eq!(&ours[..5], &[0, 0, 0, 0, 5], "schema id 5");
        let theirs = apache_avro::to_avro_datum(&schema, review_value(&event)).unwrap();
        assert_eq!(&ours[HEADER_LEN..], &theirs[..], "{n} events");
        assert_eq!(decode(&ours).unwrap(), event);
        validate(&event).unwrap();
    }
    // Arrays written in blocks with byte sizes (negative counts), as other writers may do.
    let event = review_result(3);
    let plain = encode_to_vec(&event);
    let Payload::Review(r) = &event.payload else {
        unreachable!()
    };
    let mut blocked = Vec::new();
    write_header(SchemaId::ReviewResultV1, &mut blocked);
    write_string("veh-1", &mut blocked);
    write_long(event.event_time_ms, &mut blocked);
    write_string(&r.trip_id, &mut blocked);
    for (time, e) in &r.events {
        let mut item = Vec::new();
        write_long(*time, &mut item);
        write_string(&e.event_id, &mut item);
        write_long(e.event_type.index().into(), &mut item);
        write_long(e.severity.index().into(), &mut item);
        write_double(e.speed_kph, &mut item);
        write_long(-1, &mut blocked);
        write_long(item.len() as i64, &mut blocked);
        blocked.extend_from_slice(&item);
    }
    write_long(0, &mut blocked);
    assert_ne!(blocked, plain);
    assert_eq!(decode(&blocked).unwrap(), event);
    // A hostile count is refused before anything is allocated for it.
    let mut hostile = plain[..plain.len() - 1].to_vec();
    hostile.truncate(HEADER_LEN);
    write_string("veh-1", &mut hostile);
    write_long(event.event_time_ms, &mut hostile);
    write_string("trip-1", &mut hostile);
    write_long(i64::MAX / 2, &mut hostile);
    assert!(matches!(
        decode(&hostile),
        Err(DecodeError::BadIndex { .. })
    ));
}

#[test]
fn review_requests_match_apache_avro_and_round_trip() {
    let request = ReviewRequest {
        trip_id: "trip-1".into(),
        vehicle_id: "veh-1".into(),
        trip_start_ms: 1_767_225_600_000,
        trip_end_ms: 1_767_229_200_000,
        inclusion_probability: 0.125,
        policy: "importance".into(),
    };
    let mut ours = Vec::new();
    encode_review_request(&request, &mut ours);
    let schema = parse_schema(SchemaId::ReviewRequestV1);
    let value = Value::Record(vec![
        ("trip_id".into(), Value::String("trip-1".into())),
        ("vehicle_id".into(), Value::String("veh-1".into())),
        (
            "trip_start".into(),
            Value::TimestampMillis(request.trip_start_ms),
        ),
        (
            "trip_end".into(),
            Value::TimestampMillis(request.trip_end_ms),
        ),
        ("inclusion_probability".into(), Value::Double(0.125)),
        ("policy".into(), Value::String("importance".into())),
    ]);
    let theirs = apache_avro::to_avro_datum(&schema, value).unwrap();
    assert_eq!(&ours[..5], &[0, 0, 0, 0, 4]);
    assert_eq!(&ours[HEADER_LEN..], &theirs[..]);
    assert_eq!(decode_review_request(&ours).unwrap(), request);
    // Not telemetry: the engine's decoder refuses it by schema id.
    assert_eq!(decode(&ours), Err(DecodeError::UnknownSchemaId(4)));
}

#[test]
fn fast_path_bytes_equal_apache_avro_bytes() {
    let schema = parse_schema(SchemaId::TelemetryEventV2);
    for event in samples() {
        let theirs = apache_avro::to_avro_datum(&schema, to_value(&event)).unwrap();
        let ours = encode_to_vec(&event);
        assert_eq!(&ours[HEADER_LEN..], &theirs[..], "{event:?}");
        let mut framed = Vec::new();
        write_header(SchemaId::TelemetryEventV2, &mut framed);
        framed.extend_from_slice(&theirs);
        assert_eq!(decode(&framed).unwrap(), event);
    }
}

#[test]
fn older_writer_schema_resolves_with_reader_default() {
    let v1 = parse_schema(SchemaId::TelemetryEventV1);
    let mut value = to_value(&trip());
    if let Value::Record(fields) = &mut value
        && let Value::Union(_, inner) = &mut fields[2].1
        && let Value::Record(trip_fields) = inner.as_mut()
    {
        trip_fields.retain(|(name, _)| name != "vehicle_model");
    }
    let mut framed = Vec::new();
    write_header(SchemaId::TelemetryEventV1, &mut framed);
    framed.extend_from_slice(&apache_avro::to_avro_datum(&v1, value).unwrap());

    let decoded = decode(&framed).unwrap();
    let Payload::Trip(t) = &decoded.payload else {
        panic!("expected a trip, got {decoded:?}")
    };
    assert_eq!(
        t.vehicle_model, "unknown",
        "the reader schema's default fills the added field"
    );
    let mut expected = trip();
    if let Payload::Trip(t) = &mut expected.payload {
        t.vehicle_model = "unknown".into();
    }
    assert_eq!(decoded, expected);
}

#[test]
fn framing_errors_are_schema_errors() {
    assert_eq!(decode(&[0, 0]).unwrap_err(), DecodeError::MissingHeader(2));
    assert_eq!(
        decode(&[1, 0, 0, 0, 2, 0]).unwrap_err(),
        DecodeError::BadMagic(1)
    );
    assert_eq!(
        decode(&[0, 0, 0, 0, 99]).unwrap_err(),
        DecodeError::UnknownSchemaId(99)
    );
    assert_eq!(
        decode(&[0, 0, 0, 0, 3]).unwrap_err(),
        DecodeError::UnknownSchemaId(3)
    );
    for err in [
        DecodeError::MissingHeader(0),
        DecodeError::BadMagic(7),
        DecodeError::UnknownSchemaId(9),
    ] {
        assert_eq!(err.reason(), "schema");
    }
}

#[test]
fn truncated_and_padded_records_are_rejected() {
    let bytes = encode_to_vec(&trip());
    for cut in HEADER_LEN..bytes.len() {
        let err = decode(&bytes[..cut]).unwrap_err();
        assert_eq!(err.reason(), "decode", "cut at {cut}: {err}");
    }
    let mut padded = bytes.clone();
    padded.push(0);
    assert_eq!(decode(&padded).unwrap_err(), DecodeError::TrailingBytes(1));
}

#[test]
fn overlong_varints_decode_to_the_same_value() {
    // Found by `mutated_records_never_panic`: Avro readers accept a varint padded with
    // continuation bytes (0x80 0x00 for 0); so does ours, to the same value.
    let canonical = encode_to_vec(&trip());
    let mut padded = Vec::new();
    write_header(SchemaId::TelemetryEventV2, &mut padded);
    let datum = &canonical[HEADER_LEN..];
    // vehicle_id is "veh-1": length byte 10 then 5 bytes; pad the length as 0x8a 0x00.
    padded.extend_from_slice(&[0x8a, 0x00]);
    padded.extend_from_slice(&datum[1..]);
    assert_eq!(decode(&padded).unwrap(), trip());
}

#[test]
fn out_of_range_enum_and_union_indices_are_rejected() {
    let mut bytes = encode_to_vec(&mode());
    // The last byte is the `reason` enum index; 8 is zig-zag for 4, one past SYSTEM_FAULT.
    *bytes.last_mut().unwrap() = 8;
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::BadIndex {
            name: "TransitionReason",
            index: 4
        })
    ));
}

proptest! {
    // A fixed seed keeps CI reproducible; the fuzz target explores further.
    #![proptest_config(ProptestConfig {
        cases: 20_000,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5afe_7e1e),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_datums_behind_valid_headers_never_panic(
        schema_id in 1u32..=5,
        datum in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&schema_id.to_be_bytes());
        bytes.extend_from_slice(&datum);
        let _ = decode(&bytes);
    }

    #[test]
    fn mutated_records_never_panic(index in 0usize..4, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut records = samples();
        records.push(review_result(3));
        let mut bytes = encode_to_vec(&records[index]);
        for (at, value) in flips {
            let at = HEADER_LEN + at % (bytes.len() - HEADER_LEN);
            bytes[at] = value;
        }
        if let Ok(event) = decode(&bytes) {
            // Whatever decodes is a complete event: its canonical encoding decodes to it again.
            let canonical = encode_to_vec(&event);
            prop_assert_eq!(decode(&canonical).unwrap(), event);
        }
    }
}
