use super::*;
use crate::codec::decode;
use crate::model::{Payload, validate};

fn small(seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        vehicles: 40,
        days: 10,
        ..GeneratorConfig::default()
    }
}

#[test]
fn same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let a: Vec<Vec<u8>> = Generator::new(small(7)).unwrap().map(|r| r.bytes).collect();
    let b: Vec<Vec<u8>> = Generator::new(small(7)).unwrap().map(|r| r.bytes).collect();
    let c: Vec<Vec<u8>> = Generator::new(small(8)).unwrap().map(|r| r.bytes).collect();
    assert!(
        a.len() > 1000,
        "40 vehicles x 10 days should give thousands of records, got {}",
        a.len()
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn clean_records_decode_validate_and_arrive_in_event_time_order_within_lateness() {
    let mut generator = Generator::new(small(1)).unwrap();
    let mut max_time = 0;
    let mut count = 0;
    for record in generator.by_ref() {
        assert!(record.fault.is_none());
        let event = decode(&record.bytes).unwrap();
        validate(&event).unwrap();
        assert_eq!(record.key, event.vehicle_id);
        // Trips that cross midnight arrive with their day; at most four hours early.
        assert!(
            event.event_time_ms >= max_time - 4 * 3_600_000,
            "record {} ms behind: {event:?}",
            max_time - event.event_time_ms
        );
        max_time = max_time.max(event.event_time_ms);
        count += 1;
    }
    let truth = generator.truth();
    assert_eq!(truth.records, count);
    assert_eq!(truth.faults, FaultCounts::default());
}

#[test]
fn critical_event_rate_matches_the_configured_hazard() {
    // No regressions and no frailty spread: the critical rate per hour is critical_per_hour times
    // the mean stratum risk. 400 vehicles x 60 days gives ~300 events at the default rate scaled
    // up x4, so the Poisson relative sd is ~6%; 20% tolerance is > 3 sd.
    let config = GeneratorConfig {
        vehicles: 400,
        days: 60,
        critical_per_hour: 0.016,
        vehicle_frailty_sd: 0.0,
        regressions: RegressionConfig {
            vehicle_fault_fraction: 0.0,
            firmware_rollout: None,
            ..Default::default()
        },
        ..GeneratorConfig::default()
    };
    let (mut critical, mut expected) = (0u64, 0.0f64);
    let mut trips = std::collections::HashMap::new();
    let mut critical_trips = Vec::new();
    for record in Generator::new(config.clone()).unwrap() {
        let event = decode(&record.bytes).unwrap().into_owned();
        match &event.payload {
            Payload::Trip(t) => {
                let risk = fleet::stratum_relative_risk(t.road_type, t.weather, t.night);
                expected += config.critical_per_hour * risk * t.duration_s / 3600.0;
                trips.insert(t.trip_id.to_string(), ());
            }
            Payload::Safety(e) if e.is_critical() => {
                critical += 1;
                critical_trips.push(e.trip_id.to_string());
            }
            _ => {}
        }
    }
    assert!(
        critical_trips.iter().all(|t| trips.contains_key(t)),
        "every event belongs to a trip"
    );
    let ratio = critical as f64 / expected;
    assert!(
        (0.8..1.2).contains(&ratio),
        "observed {critical} critical events, expected {expected:.1}"
    );
}

#[test]
fn injected_faults_are_labelled_and_counted() {
    let config = GeneratorConfig {
        faults: FaultConfig {
            out_of_order: 0.02,
            late: 0.01,
            duplicate: 0.02,
            corrupt: 0.02,
        },
        ..small(3)
    };
    let mut generator = Generator::new(config).unwrap();
    let records: Vec<GeneratedRecord> = generator.by_ref().collect();
    let truth = generator.truth();
    let count = |f: fn(&Fault) -> bool| {
        records
            .iter()
            .filter(|r| r.fault.as_ref().is_some_and(f))
            .count() as u64
    };
    assert_eq!(
        count(|f| matches!(f, Fault::Corrupt(_))),
        truth.faults.corrupt
    );
    assert_eq!(count(|f| *f == Fault::Late), truth.faults.late);
    assert_eq!(count(|f| *f == Fault::Duplicate), truth.faults.duplicate);
    assert_eq!(
        count(|f| *f == Fault::OutOfOrder),
        truth.faults.out_of_order
    );
    assert!(truth.faults.corrupt > 10 && truth.faults.late > 5 && truth.faults.duplicate > 10);
    let expected_dlq: u64 = truth.faults.expected_dlq.values().sum();
    assert_eq!(
        expected_dlq,
        truth.faults.corrupt + truth.faults.late + truth.faults.duplicate
    );
    for record in &records {
        if let Some(Fault::Corrupt(kind)) = record.fault {
            let err = decode(&record.bytes).map(|e| validate(&e).is_err());
            match kind.dlq_reason() {
                "invalid" => assert_eq!(err, Ok(true), "{kind:?}"),
                "oversized" => assert!(record.bytes.len() > 65_536),
                reason => assert_eq!(err.unwrap_err().reason(), reason, "{kind:?}"),
            }
        }
    }
}

#[test]
fn a_day_delivered_by_the_hour_is_the_day_sorted_at_once() {
    // The reference is the stream as a whole day gives it: every vehicle's day generated at
    // once, then every record ordered by event time and vehicle id (a stable sort: a vehicle's
    // records of the same time stay in the order generated). 1,000 vehicles give ~40,000
    // records a day, enough for records of two vehicles at the same millisecond and for trips
    // that run past midnight, which go out with their day.
    let config = GeneratorConfig {
        vehicles: 1_000,
        days: 3,
        ..small(11)
    };
    let generator = Generator::new(config.clone()).unwrap();
    let fleet = generator.fleet();
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut same_time, mut past_midnight) = (0, 0);
    for day in 0..config.days {
        let mut records: Vec<(i64, &str, Vec<u8>)> = Vec::new();
        for vehicle in &fleet.vehicles {
            let mut events = Vec::new();
            fleet.vehicle_day(vehicle, day, &mut events);
            for event in &events {
                let mut bytes = Vec::new();
                crate::codec::encode(event, &mut bytes);
                records.push((event.event_time_ms, &vehicle.id, bytes));
            }
        }
        records.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        same_time += records
            .windows(2)
            .filter(|w| w[0].0 == w[1].0 && w[0].1 != w[1].1)
            .count();
        past_midnight += records
            .iter()
            .filter(|r| r.0 >= fleet.day_start(day + 1))
            .count();
        expected.extend(
            records
                .into_iter()
                .map(|(_, id, bytes)| (id.to_string(), bytes)),
        );
    }
    assert!(
        same_time > 0 && past_midnight > 0,
        "{same_time} ties, {past_midnight} past midnight"
    );
    let streamed: Vec<(String, Vec<u8>)> = generator.map(|r| (r.key, r.bytes)).collect();
    assert_eq!(streamed.len(), expected.len());
    assert!(
        streamed == expected,
        "the hourly stream differs from the day sorted at once"
    );
}
