//! The nightly job's star schema, read back by an independent reader (pyarrow, from the venv
//! scripts/setup makes): every table present, row counts and keys as the test counts them from
//! the generated records (decoded with apache-avro, not safetel's decoder). Two snapshots, one
//! mid-stream: the fact tables' days are written once each (the second snapshot adds only the
//! days closed since, and leaves the first one's files as they were), and all days together
//! hold every trip of a closed day exactly once.
#![cfg(feature = "python-tests")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use apache_avro::types::Value;

use safetel::config::{Config, RefitConfig};
use safetel::engine::{Engine, RestoredState, StateDelta};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::metrics::Metrics;
use safetel::store::Store;
use safetel::stream::memory::{partition_for, run_in_memory};
use safetel::stream::runner::{CommitError, CommitTarget};

const READER: &str = r#"
import json, sys, pathlib
import pyarrow as pa
import pyarrow.parquet as pq
# argv: the snapshot folder, then the warehouse (fact tables by day: <table>/end_date=*/part-*.parquet)
tables = {p.stem: pq.read_table(p) for p in pathlib.Path(sys.argv[1]).glob("*.parquet")}
for name in ["fact_trip_safety", "fact_safety_event"]:
    days = sorted(pathlib.Path(sys.argv[2]).glob(name + "/end_date=*/part-*.parquet"))
    tables[name] = pa.concat_tables([pq.read_table(p) for p in days])
out = {}
for stem, table in sorted(tables.items()):
    columns = table.column_names
    info = {"rows": table.num_rows, "columns": columns,
            "schema": [[f.name, str(f.type), f.nullable] for f in table.schema]}
    for key in ["vehicle_id", "trip_id", "driver_id", "event_type", "episode_id"]:
        if key in columns:
            info[key] = sorted(set(str(v) for v in table.column(key).to_pylist()))
    for total in ["exposure_hours", "critical_events", "disengagements", "safety_events"]:
        if total in columns and stem == "fact_trip_safety":
            info["sum_" + total] = sum(v for v in table.column(total).to_pylist() if v is not None)
    if "trip_id" in columns:
        info["distinct_trip_ids"] = len(set(table.column("trip_id").to_pylist()))
    if "date" in columns:
        info["date_type"] = str(table.schema.field("date").type)
        info["dates"] = sorted(set(str(v) for v in table.column("date").to_pylist()))
    if "start_time" in columns:
        info["start_time_type"] = str(table.schema.field("start_time").type)
    out[stem] = info
print(json.dumps(out))
"#;

/// pyarrow's name for the type a BigQuery DDL column has in safetel's Parquet files.
fn arrow_type(bigquery: &str) -> &'static str {
    match bigquery {
        "STRING" => "string",
        "INT64" => "int64",
        "FLOAT64" => "double",
        "BOOL" => "bool",
        "DATE" => "date32[day]",
        "TIMESTAMP" => "timestamp[ms, tz=UTC]",
        other => panic!("a DDL type the warehouse does not write: {other}"),
    }
}

/// Every table's columns as pyarrow read them, against `schemas/warehouse/<table>.sql`: the same
/// names in the same order, the matching types, and NOT NULL exactly where the file's column is
/// required (so that `bq load` appends the files to the DDL's tables).
fn assert_files_match_the_ddl(read: &serde_json::Value) {
    for (table, info) in read.as_object().unwrap() {
        let ddl =
            safetel::warehouse::parquet::ddl(table).unwrap_or_else(|| panic!("{table} has no DDL"));
        let expected: Vec<serde_json::Value> = safetel::warehouse::parquet::ddl_columns(ddl)
            .into_iter()
            .map(|(name, ty, not_null)| serde_json::json!([name, arrow_type(&ty), !not_null]))
            .collect();
        assert!(expected.len() >= 2, "{table}: DDL read: {expected:?}");
        assert_eq!(
            info["schema"].as_array().unwrap(),
            &expected,
            "{table}: the file's columns (name, type, nullable) against its DDL"
        );
    }
}

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
    let first_day = fleet.validate().unwrap();
    let generated: Vec<_> = Generator::new(fleet).unwrap().collect();
    let records: Vec<(String, Vec<u8>)> = generated
        .iter()
        .map(|r| (r.key.clone(), r.bytes.clone()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let config = Config::default_config();
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        Metrics::new(),
    )
    .unwrap();
    // A first snapshot once the watermark is a week in, as a nightly run then would.
    let mut target = SnapshotMidway {
        store: Store::open(&dir.path().join("state")).unwrap(),
        warehouse: warehouse.clone(),
        at_ms: first_day + 7 * DAY,
        first: None,
    };
    let (_, alerts) =
        run_in_memory(&mut engine, records.into_iter(), 4, &mut target, 1_000).unwrap();
    drop(engine);
    let (store, first) = (target.store, target.first.expect("a snapshot mid-stream"));
    let first_files = day_files(&warehouse);
    // Days of four partitions, two tables: at least three days each time.
    assert!(first.days_written >= 3 * 4 * 2, "{}", first.days_written);
    assert_eq!(first.days_written, first_files.len());
    let refit = RefitConfig {
        chains: 2,
        warmup: 200,
        draws: 200,
        ..RefitConfig::default()
    };
    let outcome = safetel::nightly::refit_from_store(&store, &refit, &|_, _| {}).unwrap();
    store.write_refit(&outcome.priors, &outcome.run).unwrap();
    let snapshot = safetel::warehouse::write_snapshot(
        &store,
        &warehouse,
        outcome.run.outline.run_id,
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
    // Each day once: the second snapshot wrote only days closed since, and left the first's
    // files as they were (same bytes).
    let all_files = day_files(&warehouse);
    assert_eq!(all_files.len(), first_files.len() + snapshot.days_written);
    assert!(
        snapshot.days_written >= 3 * 4 * 2,
        "{}",
        snapshot.days_written
    );
    for (path, bytes) in &first_files {
        assert_eq!(
            all_files.get(path),
            Some(bytes),
            "{} rewritten",
            path.display()
        );
    }
    let again = safetel::warehouse::write_snapshot(&store, &warehouse, 1, None).unwrap();
    assert_eq!(again.days_written, 0, "nothing new closed, nothing written");

    let output = std::process::Command::new(&python)
        .args(["-c", READER])
        .arg(&snapshot.dir)
        .arg(&warehouse)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/setup --with-python makes the venv)"));
    assert!(
        output.status.success(),
        "pyarrow reader: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_files_match_the_ddl(&read);

    // The fact tables hold the trips of the days closed on their partition, with their events.
    let restored = store.restore().unwrap();
    let closed = |vehicle: &str, end_ms: i64| {
        let partition = partition_for(vehicle.as_bytes(), 4);
        let day = end_ms.div_euclid(DAY) * DAY;
        day + DAY
            <= restored.partitions[&safetel::engine::PartitionId::Source(partition)]
                .closed_through_ms
    };
    let ends = trip_ends(generated.iter().map(|r| r.bytes.as_slice()));
    let in_closed_days: Vec<&[u8]> = generated
        .iter()
        .map(|r| r.bytes.as_slice())
        .filter(|bytes| {
            let (vehicle, trip) = vehicle_and_trip(bytes);
            ends.get(&(vehicle.clone(), trip))
                .is_some_and(|end| closed(&vehicle, *end))
        })
        .collect();
    assert!(
        in_closed_days.len() * 10 > generated.len() * 7,
        "most days closed"
    );
    // The test's own view of the stream: every generated record is clean (no faults injected).
    let expected = common::independent_totals(in_closed_days.iter().copied());
    let trips: u64 = expected.values().map(|t| t.trips).sum();
    assert_eq!(
        read["fact_trip_safety"]["distinct_trip_ids"], trips,
        "every trip once"
    );
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
        // The fact tables by day: what the two snapshots wrote between them.
        let written = match name {
            "fact_trip_safety" | "fact_safety_event" => first.rows[name] + snapshot.rows[name],
            _ => snapshot.rows[name],
        };
        assert_eq!(
            read[name]["rows"].as_u64().unwrap() as usize,
            written,
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
    assert!(
        fact_dates.is_subset(&dates("dim_date")),
        "a dim_date row for every day in the facts"
    );
    // 14 days generated; the last ones' bins are still open when the stream ends.
    assert!(
        fact_dates.len() >= 12 && fact_dates.contains("2026-01-05"),
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

const DAY: i64 = 86_400_000;

/// The store, with one snapshot written at the first commit past `at_ms` (event time).
struct SnapshotMidway {
    store: Store,
    warehouse: PathBuf,
    at_ms: i64,
    first: Option<safetel::warehouse::Snapshot>,
}

impl CommitTarget for SnapshotMidway {
    fn commit(&mut self, delta: StateDelta) -> Result<(), CommitError> {
        let watermark = delta.positions.iter().map(|p| p.watermark_ms).max();
        self.store.write(delta)?;
        if self.first.is_none() && watermark.is_some_and(|w| w >= self.at_ms) {
            let snapshot =
                safetel::warehouse::write_snapshot(&self.store, &self.warehouse, 0, None)
                    .map_err(|e| CommitError::Failed(e.to_string()))?;
            self.first = Some(snapshot);
        }
        Ok(())
    }
}

/// Every fact table's day file under the warehouse, with its bytes.
fn day_files(warehouse: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for table in ["fact_trip_safety", "fact_safety_event"] {
        let Ok(days) = std::fs::read_dir(warehouse.join(table)) else {
            continue;
        };
        for day in days.flatten() {
            for file in std::fs::read_dir(day.path()).unwrap().flatten() {
                files.insert(file.path(), std::fs::read(file.path()).unwrap());
            }
        }
    }
    files
}

/// A record's vehicle and trip id, decoded with apache-avro.
fn vehicle_and_trip(bytes: &[u8]) -> (String, String) {
    let (vehicle, fields) = decoded(bytes);
    let Value::String(trip) = common::field(&fields, "trip_id") else {
        panic!("every record names its trip")
    };
    (vehicle, trip.clone())
}

/// (vehicle, trip id) -> end time of every trip summary.
fn trip_ends<'a>(records: impl Iterator<Item = &'a [u8]>) -> BTreeMap<(String, String), i64> {
    records
        .filter_map(|bytes| {
            let (vehicle, fields) = decoded(bytes);
            let end = match fields.iter().find(|(name, _)| name == "end_time")? {
                (_, Value::TimestampMillis(ms) | Value::Long(ms)) => *ms,
                _ => return None,
            };
            let Value::String(trip) = common::field(&fields, "trip_id") else {
                return None;
            };
            Some(((vehicle, trip.clone()), end))
        })
        .collect()
}

/// The vehicle id and the payload's fields.
fn decoded(bytes: &[u8]) -> (String, Vec<(String, Value)>) {
    let schema =
        apache_avro::Schema::parse_str(include_str!("../schemas/telemetry_event.avsc")).unwrap();
    let mut datum = &bytes[5..];
    let Value::Record(top) = apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap()
    else {
        panic!("a record")
    };
    let Value::String(vehicle) = common::field(&top, "vehicle_id").clone() else {
        panic!("a vehicle id")
    };
    let Value::Union(_, payload) = common::field(&top, "payload").clone() else {
        panic!("a payload")
    };
    let Value::Record(fields) = *payload else {
        panic!("a payload record")
    };
    (vehicle, fields)
}
