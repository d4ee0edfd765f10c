//! The pipeline against a real Apache Kafka broker (started by scripts/test via scripts/kafka):
//! `safetel topics create`, `safetel generate --kafka`, `safetel run` as child processes.
#![cfg(feature = "kafka-tests")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use rdkafka::message::{Headers, Message};
use safetel::generator::{Fault, FaultConfig, GeneratedRecord, Generator, GeneratorConfig};

const PROCESS_TIMEOUT: Duration = Duration::from_secs(240);

struct Fleet {
    seed: u64,
    vehicles: usize,
    days: u32,
    faults: FaultConfig,
}

impl Fleet {
    fn config(&self) -> GeneratorConfig {
        GeneratorConfig {
            seed: self.seed,
            vehicles: self.vehicles,
            days: self.days,
            faults: self.faults.clone(),
            ..Default::default()
        }
    }

    /// `safetel generate --kafka`, and the same records regenerated here for the test's own sums.
    fn send(
        &self,
        names: &Names,
        dir: &std::path::Path,
    ) -> (Vec<GeneratedRecord>, safetel::generator::GroundTruth) {
        let f = &self.faults;
        let truth_path = dir.join("truth.json");
        run_ok(safetel(names, &dir.join("unused"), 0).args([
            "generate",
            "--kafka",
            "--seed",
            &self.seed.to_string(),
            "--vehicles",
            &self.vehicles.to_string(),
            "--days",
            &self.days.to_string(),
            "--out-of-order",
            &f.out_of_order.to_string(),
            "--late",
            &f.late.to_string(),
            "--duplicate",
            &f.duplicate.to_string(),
            "--corrupt",
            &f.corrupt.to_string(),
            "--truth",
            truth_path.to_str().unwrap(),
        ]));
        let truth = serde_json::from_slice(&std::fs::read(truth_path).unwrap()).unwrap();
        (Generator::new(self.config()).unwrap().collect(), truth)
    }
}

fn create_topics(names: &Names, dir: &std::path::Path) {
    let out = run_ok(safetel(names, &dir.join("unused"), 0).args(["topics", "create"]));
    assert!(out.contains(&format!("{}: created", names.events)), "{out}");
}

/// Records the state must reflect: clean ones, reordered ones and the first copy of duplicates.
fn counted(records: &[GeneratedRecord]) -> Vec<&[u8]> {
    records
        .iter()
        .filter(|r| matches!(r.fault, None | Some(Fault::OutOfOrder)))
        .map(|r| r.bytes.as_slice())
        .collect()
}

fn assert_served_totals_match(port: u16, expected: &BTreeMap<String, Totals>) {
    let listed = get_json(port, "/api/vehicles").unwrap();
    assert_eq!(
        listed["vehicles"].as_array().unwrap().len(),
        expected.len(),
        "every vehicle, and no other"
    );
    for (vehicle, totals) in expected {
        assert_eq!(&served_totals(port, vehicle), totals, "vehicle {vehicle}");
    }
}

#[test]
fn fleet_through_the_broker_gives_exact_per_vehicle_counts_and_exposure() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("counts");
    create_topics(&names, dir.path());
    let fleet = Fleet {
        seed: 11,
        vehicles: 300,
        days: 21,
        faults: FaultConfig::default(),
    };
    let (records, truth) = fleet.send(&names, dir.path());
    assert_eq!(truth.records as usize, records.len());
    let expected = independent_totals(counted(&records));
    assert!(
        expected.len() >= 295,
        "a few hundred vehicles: {}",
        expected.len()
    );

    let run = Running::start(&names, &dir.path().join("state"), &[]);
    run.wait_committed(records.len() as i64, PROCESS_TIMEOUT);
    assert_served_totals_match(run.port, &expected);
    // The lag comes from librdkafka's statistics, every second: a run that commits everything
    // within the first has published none yet.
    let metrics = wait_for("the consumer lag", Duration::from_secs(30), || {
        let metrics = http_get(run.port, "/metrics")?.1;
        metrics
            .contains("safetel_consumer_lag_records{")
            .then_some(metrics)
    });
    for name in [
        "safetel_records_consumed_total{type=\"trip\"}",
        "safetel_commit_duration_seconds_count",
        "safetel_consumer_lag_records",
    ] {
        assert!(metrics.contains(name), "metric {name} missing");
    }
    let trips: u64 = expected.values().map(|t| t.trips).sum();
    assert!(
        metrics.contains(&format!(
            "safetel_records_consumed_total{{type=\"trip\"}} {trips}"
        )),
        "trip counter"
    );
    run.stop();
}

#[test]
fn sigkill_at_random_points_then_restart_equals_an_uninterrupted_run() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("crash");
    create_topics(&names, dir.path());
    let faults = FaultConfig {
        out_of_order: 0.02,
        late: 0.005,
        duplicate: 0.02,
        corrupt: 0.005,
    };
    // Large enough that processing takes seconds, so the kills land mid-stream, with injected
    // regressions (vehicle faults, a firmware rollout on day 28) so that alerts are raised.
    let fleet = Fleet {
        seed: 12,
        vehicles: 1500,
        days: 56,
        faults,
    };
    let (records, _) = fleet.send(&names, dir.path());
    let total = records.len() as i64;
    // Small commits, so that a kill lands between many commit points with work in flight.
    let env = [
        ("SAFETEL_STATE__COMMIT_MAX_RECORDS", "700"),
        ("SAFETEL_STATE__COMMIT_INTERVAL_MS", "50"),
    ];

    let whole_dir = dir.path().join("whole");
    let whole_names = Names {
        group: format!("{}-whole", names.group),
        ..names.clone()
    };
    // The group's own internal topics (changelogs, cohort reports).
    let out =
        run_ok(safetel(&whole_names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    assert!(
        out.contains(&format!("{}.state-changelog: created", whole_names.group)),
        "{out}"
    );
    let whole = Running::start(&whole_names, &whole_dir, &env);
    whole.wait_committed(total, PROCESS_TIMEOUT);
    whole.stop();

    // The crashed run reads the same events and publishes to topics of its own.
    let crash_names = Names {
        events: names.events.clone(),
        ..Names::unique("crashed")
    };
    let out =
        run_ok(safetel(&crash_names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    assert!(
        out.contains(&format!("{}: created", crash_names.regressions)),
        "{out}"
    );
    let crash_dir = dir.path().join("crashed");
    // Kill points: four committed-record counts drawn (seeded) between 5% and 90% of the stream.
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261126);
    let mut fractions: Vec<f64> = (0..4).map(|_| rng.random_range(0.05..0.9)).collect();
    fractions.sort_by(f64::total_cmp);
    let mut killed_at = Vec::new();
    for fraction in &fractions {
        let run = Running::start(&crash_names, &crash_dir, &env);
        let target = (total as f64 * fraction) as i64;
        run.wait_committed(target, PROCESS_TIMEOUT);
        run.kill();
        let store = safetel::store::Store::open(&crash_dir).unwrap();
        let committed: i64 = store
            .restore()
            .unwrap()
            .partitions
            .iter()
            .filter(|(p, _)| p.is_source())
            .map(|(_, p)| p.next_offset)
            .sum();
        killed_at.push(committed);
    }
    assert!(
        killed_at.iter().all(|c| *c < total),
        "the kills landed before the end: {killed_at:?} of {total} ({fractions:?})"
    );
    let run = Running::start(&crash_names, &crash_dir, &env);
    run.wait_committed(total, PROCESS_TIMEOUT);
    run.stop();

    let inspect = |state: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&run_ok(safetel(&names, state, 0).args([
            "inspect",
            "--state-dir",
            state.to_str().unwrap(),
        ])))
        .unwrap()
    };
    // Apart from where the cohort aggregators have read the repartition topic to: how many
    // records that is depends on how commits fell (and aborted ones), not on the state.
    let (mut a, mut b) = (inspect(&whole_dir), inspect(&crash_dir));
    for snapshot in [&mut a, &mut b] {
        snapshot
            .as_object_mut()
            .unwrap()
            .remove("cohort_report_offsets");
    }
    assert_eq!(a["facts"], b["facts"], "same facts");
    assert_eq!(
        a["partitions"], b["partitions"],
        "same offsets, watermarks and seen ids"
    );
    assert_eq!(a["vehicles"], b["vehicles"], "same per-vehicle bins");
    assert_eq!(
        a["series"], b["series"],
        "same change-point state, vehicles and cohorts"
    );
    assert_eq!(a, b, "the whole store");
    let expected = independent_totals(counted(&records));
    let vehicles = a["vehicles"].as_object().unwrap();
    for (vehicle, totals) in &expected {
        assert_eq!(
            vehicles[vehicle]["totals"]["exposure_ms"].as_u64(),
            Some(totals.exposure_ms),
            "{vehicle}"
        );
        assert_eq!(
            vehicles[vehicle]["totals"]["critical"].as_u64(),
            Some(totals.critical),
            "{vehicle}"
        );
    }
    // No alert lost, none invented: the same ids, each the same alert; repeats only of an id.
    let (whole_alerts, crashed_alerts) = (
        alerts_by_id(&names, PROCESS_TIMEOUT),
        alerts_by_id(&crash_names, PROCESS_TIMEOUT),
    );
    assert!(!whole_alerts.is_empty(), "the rollout raises alerts");
    assert_eq!(
        whole_alerts.keys().collect::<Vec<_>>(),
        crashed_alerts.keys().collect::<Vec<_>>()
    );
    assert_eq!(whole_alerts, crashed_alerts);
}

#[test]
fn thousands_of_bad_records_land_in_the_dlq_with_reasons_and_good_ones_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("dlq");
    create_topics(&names, dir.path());
    let faults = FaultConfig {
        out_of_order: 0.02,
        late: 0.01,
        duplicate: 0.01,
        corrupt: 0.02,
    };
    // Thousands of bad records of every kind among a hundred thousand good ones.
    let fleet = Fleet {
        seed: 13,
        vehicles: 600,
        days: 21,
        faults,
    };
    let (records, truth) = fleet.send(&names, dir.path());
    let f = &truth.faults;
    assert!(
        f.corrupt > 1000 && f.late > 500 && f.duplicate > 500 && records.len() > 100_000,
        "enough bad records: {f:?} in {}",
        records.len()
    );
    for reason in [
        "oversized",
        "decode",
        "schema",
        "invalid",
        "late",
        "duplicate",
    ] {
        assert!(
            f.expected_dlq.get(reason).is_some_and(|n| *n >= 50),
            "{reason}: {:?}",
            f.expected_dlq
        );
    }

    let run = Running::start(&names, &dir.path().join("state"), &[]);
    run.wait_committed(records.len() as i64, PROCESS_TIMEOUT);
    assert_served_totals_match(run.port, &independent_totals(counted(&records)));
    run.stop();

    // Read the DLQ back with a plain consumer and check every reason header.
    let consumer = topic_reader(&names, &names.dlq);
    let expected_total: u64 = truth.faults.expected_dlq.values().sum();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut payloads: HashMap<Vec<u8>, u64> = HashMap::new();
    wait_for("every dead letter", PROCESS_TIMEOUT, || {
        while let Some(message) = consumer.poll(Duration::from_millis(500)) {
            let message = message.unwrap();
            let headers = message.headers().expect("dead letters carry headers");
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).to_string())
            };
            let reason = header("reason").expect("reason header");
            assert!(
                header("error").is_some_and(|e| !e.is_empty()),
                "error header"
            );
            assert_eq!(
                header("source.topic").as_deref(),
                Some(names.events.as_str())
            );
            *by_reason.entry(reason).or_default() += 1;
            *payloads
                .entry(message.payload().unwrap_or(&[]).to_vec())
                .or_default() += 1;
        }
        (by_reason.values().sum::<u64>() >= expected_total).then_some(())
    });
    assert_eq!(by_reason, truth.faults.expected_dlq);
    for record in records
        .iter()
        .filter(|r| matches!(r.fault, Some(Fault::Corrupt(_)) | Some(Fault::Late)))
    {
        assert!(
            payloads.contains_key(&record.bytes),
            "original bytes of {:?} kept in the DLQ",
            record.fault
        );
    }
}
