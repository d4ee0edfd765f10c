//! The nightly job's star-schema snapshot, read back by an independent reader (pyarrow, from
//! the venv scripts/setup makes): every table present, row counts and keys as the test counts
//! them from the generated records (decoded with apache-avro, not safetel's decoder).
#![cfg(feature = "python-tests")]

mod common;

use std::collections::BTreeSet;

use safetel::config::{Config, RefitConfig};
use safetel::engine::memory::run_in_memory;
use safetel::engine::{Engine, RestoredState};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::metrics::Metrics;
use safetel::store::Store;

const READER: &str = r#"
import json, sys, pathlib
import pyarrow.parquet as pq
out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.parquet")):
    table = pq.read_table(path)
    columns = table.column_names
    info = {"rows": table.num_rows, "columns": columns}
    for key in ["vehicle_id", "trip_id", "driver_id", "event_type", "episode_id"]:
        if key in columns:
            info[key] = sorted(set(str(v) for v in table.column(key).to_pylist()))
    for total in ["exposure_hours", "critical_events", "disengagements", "safety_events"]:
        if total in columns and path.stem == "fact_trip_safety":
            info["sum_" + total] = sum(v for v in table.column(total).to_pylist() if v is not None)
    if "date" in columns:
        info["date_type"] = str(table.schema.field("date").type)
        info["dates"] = sorted(set(str(v) for v in table.column("date").to_pylist()))
    if "start_time" in columns:
        info["start_time_type"] = str(table.schema.field("start_time").type)
    out[path.stem] = info
print(json.dumps(out))
"#;

#[test]
fn the_snapshot_reads_back_in_pyarrow_with_the_expected_rows_and_keys() {
    let python = std::env::var("SAFETEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let fleet = GeneratorConfig {
        seed: 21,
        vehicles: 40,
        days: 14,
        trips_per_day: 12.0,
        ..Default::default()
    };
    let generated: Vec<_> = Generator::new(fleet).unwrap().collect();
    let records: Vec<(String, Vec<u8>)> = generated
        .iter()
        .map(|r| (r.key.clone(), r.bytes.clone()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state")).unwrap();
    let config = Config::default_config();
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        Metrics::new(),
    )
    .unwrap();
    let (_, alerts) =
        run_in_memory(&mut engine, records.into_iter(), 4, &mut store, 5_000).unwrap();
    drop(engine);
    let refit = RefitConfig {
        chains: 2,
        warmup: 200,
        draws: 200,
        ..RefitConfig::default()
    };
    let outcome = safetel::nightly::refit_from_store(&store, &refit, &|_, _| {}).unwrap();
    store.write_refit(&outcome.priors, &outcome.run).unwrap();
    let warehouse = dir.path().join("warehouse");
    let snapshot = safetel::warehouse::write_snapshot(
        &store,
        &warehouse,
        outcome.run["run_id"].as_i64().unwrap(),
        Some(&outcome.result.vehicles),
    )
    .unwrap();
    assert!(
        snapshot
            .dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("snapshot_date=")
    );

    let output = std::process::Command::new(&python)
        .args(["-c", READER])
        .arg(&snapshot.dir)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/setup --with-python makes the venv)"));
    assert!(
        output.status.success(),
        "pyarrow reader: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    // The test's own view of the stream: every generated record is clean (no faults injected).
    let expected = common::independent_totals(generated.iter().map(|r| r.bytes.as_slice()));
    let trips: u64 = expected.values().map(|t| t.trips).sum();
    let safety: u64 = expected.values().map(|t| t.safety_events).sum();
    let critical: u64 = expected.values().map(|t| t.critical).sum();
    let exposure_h: f64 = expected
        .values()
        .map(|t| t.exposure_ms as f64 / 3.6e6)
        .sum();
    let vehicles: BTreeSet<String> = expected.keys().cloned().collect();

    let tables: BTreeSet<&str> = read
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let names = [
        "dim_date",
        "dim_driver",
        "dim_event_type",
        "dim_vehicle",
        "fact_model_run",
        "fact_regression",
        "fact_safety_event",
        "fact_trip_safety",
    ];
    assert_eq!(tables, names.into_iter().collect());
    for name in names {
        assert_eq!(
            read[name]["rows"].as_u64().unwrap() as usize,
            snapshot.rows[name],
            "{name}"
        );
    }
    let ids = |table: &str, key: &str| -> BTreeSet<String> {
        read[table][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(read["fact_trip_safety"]["rows"], trips);
    assert_eq!(read["fact_safety_event"]["rows"], safety);
    assert_eq!(
        read["fact_trip_safety"]["sum_safety_events"], safety,
        "every event belongs to its trip"
    );
    assert_eq!(read["fact_trip_safety"]["sum_critical_events"], critical);
    let sum_exposure = read["fact_trip_safety"]["sum_exposure_hours"]
        .as_f64()
        .unwrap();
    assert!(
        (sum_exposure - exposure_h).abs() < 1e-6 * exposure_h,
        "{sum_exposure} vs {exposure_h}"
    );
    assert_eq!(ids("dim_vehicle", "vehicle_id"), vehicles);
    assert_eq!(
        ids("fact_trip_safety", "vehicle_id"),
        vehicles,
        "trip rows point at dim_vehicle"
    );
    assert!(ids("fact_safety_event", "trip_id").is_subset(&ids("fact_trip_safety", "trip_id")));
    assert!(ids("fact_trip_safety", "driver_id").is_subset(&ids("dim_driver", "driver_id")));
    assert_eq!(read["dim_event_type"]["rows"], 6);
    assert_eq!(read["fact_model_run"]["rows"], 1);
    let dates = |table: &str| ids(table, "dates");
    let fact_dates: BTreeSet<String> = dates("fact_trip_safety")
        .union(&dates("fact_safety_event"))
        .cloned()
        .collect();
    assert_eq!(
        dates("dim_date"),
        fact_dates,
        "one dim_date row per day in the facts"
    );
    assert!(
        fact_dates.len() >= 14 && fact_dates.contains("2026-01-05"),
        "{fact_dates:?}"
    );
    assert_eq!(read["fact_trip_safety"]["date_type"], "date32[day]");
    assert!(
        read["fact_trip_safety"]["start_time_type"]
            .as_str()
            .unwrap()
            .starts_with("timestamp[ms")
    );
    let episodes = ids("fact_regression", "episode_id");
    let opened: BTreeSet<String> = alerts
        .alerts
        .iter()
        .map(|a| a.alert_id.rsplit_once('/').unwrap().0.to_string())
        .collect();
    assert_eq!(
        episodes, opened,
        "one row per episode the stream alerted on"
    );
}
