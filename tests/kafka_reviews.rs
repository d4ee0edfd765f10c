//! The review loop through a real Apache Kafka broker: `safetel generate --kafka
//! --review-service` holds critical events back and answers review requests; `safetel run`
//! under a review budget asks for the trips its policy selects and counts only the answers.
//! The requests are read back with `apache-avro` and the committed schema; the alerts must equal
//! those of the same fleet run in process with the critical events in the stream.
#![cfg(feature = "kafka-tests")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use apache_avro::types::Value;
use common::*;
use safetel::codec::SchemaId;
use safetel::config::Config;
use safetel::engine::{Engine, RestoredState};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::metrics::Metrics;
use safetel::model::Payload;
use safetel::sampling::{Policy, SamplingPolicy};
use safetel::store::Store;
use safetel::stream::memory::run_in_memory;

const TIMEOUT: Duration = Duration::from_secs(300);
const BUDGET: f64 = 0.5;

#[test]
fn run_asks_the_review_service_and_counts_only_its_answers() {
    review_loop(None);
}

/// The same loop with a schema registry (authenticated): the service and `run` register their
/// schemas and frame requests, answers and alerts with the registry's ids.
#[test]
fn the_review_loop_runs_through_a_schema_registry() {
    review_loop(Some(&TestRegistry::from_env()));
}

fn review_loop(registry: Option<&TestRegistry>) {
    let registry_env: Vec<(&str, &str)> = registry.map(|r| r.env().to_vec()).unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique(if registry.is_some() {
        "reviews-registry"
    } else {
        "reviews"
    });
    let out = run_ok(safetel(&names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    assert!(
        out.contains(&format!("{}: created", names.review_requests)),
        "{out}"
    );
    // Commercial utilisation (8 h a day): enough reviewed events at half the trips to alert.
    let fleet_file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/fleet-commercial.toml");
    let fleet = GeneratorConfig {
        seed: 7,
        vehicles: 200,
        days: 42,
        ..toml::from_str(&std::fs::read_to_string(fleet_file).unwrap()).unwrap()
    };
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet.clone())
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect();
    // The test's own count of what the service holds back: decodable critical events, by trip.
    let mut critical_by_trip: BTreeMap<String, u64> = BTreeMap::new();
    for (_, bytes) in &records {
        if let Ok(Payload::Safety(e)) = safetel::codec::decode(bytes).map(|e| e.payload)
            && e.is_critical()
        {
            *critical_by_trip.entry(e.trip_id.to_string()).or_default() += 1;
        }
    }
    let withheld = critical_by_trip.values().sum::<u64>() as i64;

    // In process, critical events in the stream: what `run` must arrive at.
    let config = Config::default_config();
    let policy = SamplingPolicy::new(Policy::Uniform, BUDGET, 0.1, 0).unwrap();
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        Metrics::new(),
    )
    .unwrap()
    .with_sampling(policy);
    let store_dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(store_dir.path()).unwrap();
    let (_, expected) =
        run_in_memory(&mut engine, records.iter().cloned(), 4, &mut store, 20_000).unwrap();
    let reviewed = engine
        .vehicles()
        .snapshot()
        .iter()
        .map(|v| v.totals().reviewed_trips)
        .sum::<u64>() as i64;
    assert!(
        expected.alerts.iter().any(|a| a.status.name() == "OPENED"),
        "the fleet raises alerts under the budget in process"
    );

    // The generator as review service (it exits 20 s after the last request)...
    let mut service = safetel(&names, &dir.path().join("unused"), 0)
        .args([
            "generate",
            "--kafka",
            "--review-service",
            "--review-idle-exit-s",
            "20",
            "--fleet",
            fleet_file,
            "--seed",
            "7",
            "--vehicles",
            "200",
            "--days",
            "42",
            "--truth",
            dir.path().join("truth.json").to_str().unwrap(),
        ])
        .envs(registry_env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // ...and `run` with a review budget; a review is awaited as long as it takes.
    let mut run_env = vec![
        ("SAFETEL_SAMPLING__POLICY", "uniform"),
        ("SAFETEL_SAMPLING__BUDGET", "0.5"),
        ("SAFETEL_SAMPLING__REVIEW_TIMEOUT_S", "315360000"),
    ];
    run_env.extend(registry_env.iter().copied());
    let run = Running::start(&names, &dir.path().join("state"), &run_env);
    // Everything but the withheld events, plus one answer per reviewed trip.
    run.wait_committed(records.len() as i64 - withheld + reviewed, TIMEOUT);
    let metrics = http_get(run.port, "/metrics").unwrap().1;
    let metric = |line: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{line} missing"))
    };
    assert_eq!(metric("safetel_reviews_total "), reviewed as f64);
    assert_eq!(
        metric("safetel_review_results_total{outcome=\"answered\"} "),
        reviewed as f64
    );
    assert_eq!(metric("safetel_reviews_pending "), 0.0);
    let fleet = get_json(run.port, "/api/fleet").unwrap();
    assert_eq!(
        metric("safetel_records_consumed_total{type=\"review_result\"} "),
        reviewed as f64
    );
    run.stop();
    let status = service.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(service.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!("{withheld} critical events held back")),
        "{log}"
    );

    // The ids the records are framed with: the fixed ones, or those the registry gave (asking
    // it again for a registered schema gives its id).
    let framed_with = |schema: SchemaId, topic: &str| match registry {
        None => schema as u32,
        Some(registry) => registry
            .client()
            .register(&format!("{topic}-value"), schema.schema_json())
            .unwrap(),
    };
    let request_id = framed_with(SchemaId::ReviewRequestV1, &names.review_requests);
    let alert_id = framed_with(SchemaId::RegressionAlertV1, &names.regressions);
    if registry.is_some() {
        assert!(
            request_id > 5 && alert_id > 5,
            "registry ids: {request_id}, {alert_id}"
        );
    }

    // The requests, decoded with the committed schema: one per reviewed trip, keyed by vehicle.
    let schema =
        apache_avro::Schema::parse_str(include_str!("../schemas/review_request.avsc")).unwrap();
    let mut trips = BTreeSet::new();
    for (key, payload) in read_until_quiet(
        &topic_reader(&names, &names.review_requests),
        Duration::from_secs(5),
        TIMEOUT,
    ) {
        assert_eq!(payload[0], 0, "Confluent framing");
        assert_eq!(&payload[1..5], &request_id.to_be_bytes(), "schema id");
        let mut datum = &payload[5..];
        let Value::Record(fields) =
            apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap()
        else {
            panic!("not a record")
        };
        let Value::String(vehicle) = field(&fields, "vehicle_id") else {
            panic!()
        };
        assert_eq!(vehicle.as_bytes(), &key[..]);
        assert_eq!(
            field(&fields, "inclusion_probability"),
            &Value::Double(BUDGET)
        );
        assert_eq!(field(&fields, "policy"), &Value::String("uniform".into()));
        let Value::String(trip) = field(&fields, "trip_id") else {
            panic!()
        };
        trips.insert(trip.clone());
    }
    assert_eq!(
        trips.len() as i64,
        reviewed,
        "one request per reviewed trip"
    );

    // The fleet's critical events, estimated from the reviewed trips alone (Horvitz-Thompson:
    // each reviewed event weighted 1/pi; the variance sums (1 - pi) y^2 / pi^2 over trips).
    let y = |trip: &String| critical_by_trip.get(trip).copied().unwrap_or(0) as f64;
    let estimate: f64 = trips.iter().map(|t| y(t) / BUDGET).sum();
    let variance: f64 = trips
        .iter()
        .map(|t| (1.0 - BUDGET) * y(t) * y(t) / (BUDGET * BUDGET))
        .sum();
    let served = &fleet["critical"];
    assert_eq!(served["method"], "horvitz_thompson");
    assert!(
        (served["estimate"].as_f64().unwrap() - estimate).abs() < 1e-6,
        "{fleet}"
    );
    assert!((served["standard_error"].as_f64().unwrap() - variance.sqrt()).abs() < 1e-6);
    assert_eq!(fleet["sampling"]["reviewed_trips"], reviewed);
    assert!(
        (estimate - withheld as f64).abs() < 4.0 * variance.sqrt(),
        "the estimate {estimate} stands for all {withheld} critical events"
    );

    // The alerts equal the in-process run's: nothing lost in the loop.
    let alert_schema =
        apache_avro::Schema::parse_str(include_str!("../schemas/regression_alert.avsc")).unwrap();
    let published: BTreeMap<String, serde_json::Value> = read_until_quiet(
        &topic_reader(&names, &names.regressions),
        Duration::from_secs(5),
        TIMEOUT,
    )
    .iter()
    .map(|(_, payload)| {
        let alert = decode_alert_framed_with(payload, &alert_schema, alert_id);
        (alert["alert_id"].as_str().unwrap().to_string(), alert)
    })
    .collect();
    let expected: BTreeMap<String, serde_json::Value> = expected
        .alerts
        .iter()
        .map(|a| (a.alert_id.clone(), serde_json::to_value(a).unwrap()))
        .collect();
    assert_eq!(published, expected);
}
