//! Bad clocks and bad claims through a real broker (scripts/kafka), the records timestamped by
//! the broker's producer path as in production (CreateTime: now, while the fleet's event times
//! are earlier this year). Each bad record lands in the dead-letter topic with its reason;
//! every good record is counted; no bin or detector moves to 2099; and a partition whose records
//! are all being dropped shows on `/health`.
#![cfg(feature = "kafka-tests")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::message::{Headers, Message};
use safetel::codec::{decode, encode_to_vec};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::model::{Payload, TelemetryEvent};
use safetel::stream::memory::partition_for;

const TIMEOUT: Duration = Duration::from_secs(240);
const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
/// 2099-12-31T00:00Z: inside the 2000..2100 range validation accepts.
const IN_2099: i64 = 4_102_358_400_000;

fn fleet(seed: u64, vehicles: usize, days: u32) -> Vec<(String, Vec<u8>)> {
    let config = GeneratorConfig {
        seed,
        vehicles,
        days,
        ..Default::default()
    };
    Generator::new(config)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect()
}

/// The record re-encoded after `edit` changed its decoded event.
fn rewritten(bytes: &[u8], edit: impl FnOnce(&mut TelemetryEvent<'_>)) -> Vec<u8> {
    let mut event = decode(bytes).unwrap();
    edit(&mut event);
    encode_to_vec(&event)
}

fn is_trip(bytes: &[u8]) -> bool {
    matches!(decode(bytes).unwrap().payload, Payload::Trip(_))
}

fn shift_all(e: &mut TelemetryEvent<'_>, by: i64) {
    e.event_time_ms += by;
    if let Payload::Trip(t) = &mut e.payload {
        t.start_time_ms += by;
        t.end_time_ms += by;
    }
}

fn broker_client() -> [(&'static str, String); 3] {
    [
        ("bootstrap.servers", bootstrap()),
        ("linger.ms", "5".to_string()),
        // The stream's order is part of the test (what is late): a retried batch must not
        // overtake the next one, as it may without idempotence on a loaded machine.
        ("enable.idempotence", "true".to_string()),
    ]
}

fn send(topic: &str, records: &[(String, Vec<u8>)]) {
    let client = broker_client();
    let client: Vec<(&str, &str)> = client.iter().map(|(k, v)| (*k, v.as_str())).collect();
    produce(&client, topic, records);
}

/// The dead letters' `reason` headers, once `expected` of them have arrived.
fn dead_letter_reasons(names: &Names, expected: usize) -> BTreeMap<String, usize> {
    let consumer = topic_reader(names, &names.dlq);
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    wait_for("the dead letters", TIMEOUT, || {
        while let Some(message) = consumer.poll(Duration::from_millis(500)) {
            let message = message.unwrap();
            let headers = message.headers().expect("dead letters carry headers");
            let reason = headers
                .iter()
                .find(|h| h.key == "reason")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
                .expect("a reason header");
            *by_reason.entry(reason).or_default() += 1;
        }
        (by_reason.values().sum::<usize>() >= expected).then_some(())
    });
    // Nothing more arrives.
    std::thread::sleep(Duration::from_secs(2));
    if let Some(message) = consumer.poll(Duration::from_millis(500)) {
        let message = message.unwrap();
        panic!(
            "an unexpected dead letter: {:?}",
            message.headers().map(|h| h.count())
        );
    }
    by_reason
}

#[test]
fn bad_clocks_and_claims_through_the_broker_lose_no_good_record() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("clocks");
    run_ok(safetel(&names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    let clean = fleet(21, 120, 10);
    let mut records = clean.clone();
    // (where it goes, the record, the reason it is dead-lettered for)
    type Bad<'a> = (usize, (String, Vec<u8>), &'a str);
    let mut bad: Vec<Bad> = Vec::new();
    let trip_after = |from: usize| (from..clean.len()).find(|&i| is_trip(&clean[i].1)).unwrap();
    let new_trip = |i: usize, id: &str, edit: &dyn Fn(&mut TelemetryEvent<'_>)| {
        let bytes = rewritten(&clean[i].1, |e| {
            if let Payload::Trip(t) = &mut e.payload {
                t.trip_id = id.to_string().into();
            }
            edit(e);
        });
        (clean[i].0.clone(), bytes)
    };
    // 1. A safety event whose clock reset to 2099.
    let safety = (clean.len() / 8..clean.len())
        .find(|&i| matches!(decode(&clean[i].1).unwrap().payload, Payload::Safety(_)))
        .unwrap();
    let bytes = rewritten(&clean[safety].1, |e| {
        e.event_time_ms = IN_2099;
        if let Payload::Safety(s) = &mut e.payload {
            s.event_id = "clock-reset".into();
        }
    });
    bad.push((safety + 1, (clean[safety].0.clone(), bytes), "future"));
    // 2. A trip sent now whose start and end lie in 2099, another's in 2000.
    let i = trip_after(clean.len() / 4);
    let in_2099 = new_trip(i, "in-2099", &|e| {
        if let Payload::Trip(t) = &mut e.payload {
            t.start_time_ms = IN_2099;
            t.end_time_ms = IN_2099 + HOUR;
            t.duration_s = 3600.0;
        }
    });
    bad.push((i + 1, in_2099, "future"));
    let i = trip_after(clean.len() / 3);
    let in_2000 = new_trip(i, "in-2000", &|e| {
        if let Payload::Trip(t) = &mut e.payload {
            t.start_time_ms = 946_771_200_000;
            t.end_time_ms = 946_771_200_000 + HOUR;
            t.duration_s = 3600.0;
        }
    });
    bad.push((i + 1, in_2000, "invalid"));
    // 3. A trip whose end is 3 days before its event time; one sent 3 days late.
    let i = trip_after(clean.len() / 2);
    let reported_late = new_trip(i, "ended-3-days-earlier", &|e| {
        if let Payload::Trip(t) = &mut e.payload {
            t.start_time_ms -= 3 * DAY;
            t.end_time_ms -= 3 * DAY;
        }
    });
    bad.push((i + 1, reported_late, "invalid"));
    let i = trip_after(clean.len() * 5 / 8);
    bad.push((
        i + 1,
        new_trip(i, "sent-3-days-late", &|e| shift_all(e, -3 * DAY)),
        "late",
    ));
    // 4. A trip claiming 48 h of driving between timestamps an hour or so apart.
    let i = trip_after(clean.len() * 3 / 4);
    let inflated = new_trip(i, "claims-48h", &|e| {
        if let Payload::Trip(t) = &mut e.payload {
            t.duration_s = 172_800.0;
        }
    });
    bad.push((i + 1, inflated, "invalid"));
    // 5. An exact copy of a record, re-sent a little later.
    let i = clean.len() * 7 / 8;
    bad.push((i + 40, clean[i].clone(), "duplicate"));
    bad.sort_by_key(|(at, _, _)| std::cmp::Reverse(*at));
    let mut expected_reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad_at = Vec::new();
    for (at, record, reason) in bad {
        records.insert(at, record);
        bad_at = bad_at.into_iter().map(|i| i + 1).collect();
        bad_at.push(at);
        *expected_reasons.entry(reason.to_string()).or_default() += 1;
    }
    // And a vehicle whose clock is 3 days fast all along, among the others: its records are
    // accepted (the broker's time, now, is later still), and no other vehicle's are late.
    let fast_source = clean[0].0.clone();
    let mut with_fast = Vec::new();
    for (n, (key, bytes)) in records.into_iter().enumerate() {
        let fast = (key == fast_source && !bad_at.contains(&n)).then(|| {
            let bytes = rewritten(&bytes, |e| {
                e.vehicle_id = "veh-fast".into();
                shift_all(e, 3 * DAY);
            });
            ("veh-fast".to_string(), bytes)
        });
        with_fast.push((key, bytes));
        with_fast.extend(fast);
    }
    let fast_records: Vec<&[u8]> = with_fast
        .iter()
        .filter(|(k, _)| k == "veh-fast")
        .map(|(_, b)| b.as_slice())
        .collect();
    let mut expected = independent_totals(clean.iter().map(|(_, b)| b.as_slice()));
    expected.extend(independent_totals(fast_records));
    send(&names.events, &with_fast);

    let run = Running::start(&names, &dir.path().join("state"), &[]);
    run.wait_committed(with_fast.len() as i64, TIMEOUT);
    let listed = get_json(run.port, "/api/vehicles").unwrap();
    assert_eq!(listed["vehicles"].as_array().unwrap().len(), expected.len());
    for (vehicle, totals) in &expected {
        assert_eq!(
            &served_totals(run.port, vehicle),
            totals,
            "vehicle {vehicle}"
        );
    }
    // No bin, and no detector, anywhere near 2099 (or 2000).
    let plausible = 1_767_000_000_000..1_800_000_000_000i64;
    for vehicle in expected.keys() {
        let v = get_json(run.port, &format!("/api/vehicles/{vehicle}")).unwrap();
        for bin in v["bins"].as_array().unwrap() {
            let start = bin["start_ms"].as_i64().unwrap();
            assert!(plausible.contains(&start), "{vehicle}: a bin at {start}");
        }
        for (class, detector) in v["detectors"].as_object().unwrap() {
            let next = detector["next_bin_ms"].as_i64().unwrap();
            assert!(
                plausible.contains(&next),
                "{vehicle} {class}: next bin {next}"
            );
        }
    }
    let health = http_get(run.port, "/health").unwrap();
    assert_eq!(health.0, 200, "{}", health.1);
    run.stop();
    assert_eq!(dead_letter_reasons(&names, 7), expected_reasons);
}

#[test]
fn a_partition_whose_records_are_all_dropped_shows_on_health() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("dlq-share");
    run_ok(safetel(&names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    let records = fleet(22, 60, 20);
    let time_of = |bytes: &[u8]| decode(bytes).unwrap().event_time_ms;
    let start = time_of(&records[0].1);
    let half = records
        .iter()
        .position(|(_, b)| time_of(b) >= start + 10 * DAY)
        .unwrap();
    let (first, second) = records.split_at(half);
    // A partition's vehicles with their clocks 30 days ahead of the broker's now (whenever the
    // test runs).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ahead = now_ms + 30 * DAY - start;
    let dropped = partition_for(records[0].0.as_bytes(), 4);
    let burst: Vec<(String, Vec<u8>)> = first
        .iter()
        .filter(|(k, _)| partition_for(k.as_bytes(), 4) == dropped)
        .take(1200)
        .map(|(k, b)| (k.clone(), rewritten(b, |e| shift_all(e, ahead))))
        .collect();
    assert_eq!(burst.len(), 1200);

    let window = [("SAFETEL_STREAM__DLQ_WINDOW_RECORDS", "2000")];
    let run = Running::start(&names, &dir.path().join("state"), &window);
    let health = |port: u16| {
        let (code, body) = http_get(port, "/health").unwrap();
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        )
    };
    send(&names.events, first);
    run.wait_committed(first.len() as i64, TIMEOUT);
    let (code, body) = health(run.port);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["dead_letters"]["dead_lettered"], 0);

    send(&names.events, &burst);
    run.wait_committed((first.len() + burst.len()) as i64, TIMEOUT);
    let body = wait_for("/health to report the dropped partition", TIMEOUT, || {
        let (code, body) = health(run.port);
        (code == 503).then_some(body)
    });
    let dlq = &body["dead_letters"];
    assert_eq!(dlq["above_max"], true, "{body}");
    assert_eq!(dlq["top_reasons"][0]["reason"], "future", "{body}");
    assert_eq!(dlq["top_partitions"][0]["partition"], dropped, "{body}");
    assert!(dlq["share"].as_f64().unwrap() > 0.5, "{body}");
    let metrics = http_get(run.port, "/metrics").unwrap().1;
    assert!(
        metric_value(&metrics, "safetel_dlq_recent_records{reason=\"future\"}")
            .is_some_and(|n| n >= 1000.0),
        "the metric by reason"
    );

    // Good records again: the bad ones leave the window, and health comes back.
    send(&names.events, second);
    run.wait_committed(records.len() as i64 + burst.len() as i64, TIMEOUT);
    let body = wait_for("/health to recover", TIMEOUT, || {
        let (code, body) = health(run.port);
        (code == 200).then_some(body)
    });
    assert_eq!(body["dead_letters"]["dead_lettered"], 0, "{body}");
    run.stop();
}
