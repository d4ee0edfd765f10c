//! Star-schema Parquet for BI tools (docs/design.md §6), matching `schemas/warehouse/*.sql`.
//!
//! Facts by day, each written once: `<warehouse>/fact_trip_safety/end_date=YYYY-MM-DD/part-<p>.parquet`
//! (one row per trip, in the day its trip ended, exposure and event counts by class) and
//! `fact_safety_event/end_date=.../part-<p>.parquet` (each event in its trip's day), for source partition `p`, once
//! every bin of that day has closed on `p`; a day already written is never written again, so a
//! query over all the days counts every trip once. Snapshots, one folder per snapshot date,
//! `<warehouse>/snapshot_date=YYYY-MM-DD/<table>.parquet`: the dimensions `dim_vehicle`,
//! `dim_driver`, `dim_date`, `dim_event_type`, and `fact_regression` (episodes from the alerts)
//! and `fact_model_run` (refit diagnostics). Built from the state store's facts (as far back as
//! retention keeps them: days must be written before their facts expire, which the daily refit
//! does), vehicles, priors, alerts and model runs, and the latest refit's per-vehicle hazards when
//! there is one. An edge module: reads the store, writes files.

pub mod parquet;
mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use self::parquet::{Table, WriteError};
use self::tables::{
    EventRow, FactRows, Trip, TripCounts, date_table, driver_table, event_table, event_type_table,
    model_run_table, regression_table, strata, trip_table, vehicle_table,
};
use crate::model::utc_date;
use crate::refit::result::VehicleHazard;
use crate::store::{Store, StoreError};

const DAY_MS: i64 = 86_400_000;

/// How far after an event its trip may end: the longest trip
/// (`MAX_TRIP_DURATION_S`, 48 h) and the tolerance of its span, rounded up to days.
const ORPHAN_EVENT_DELAY_MS: i64 = 3 * DAY_MS;

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("table {table}: {source}")]
    Write {
        table: &'static str,
        source: WriteError,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Where a snapshot went, how many rows each table has, and its trips summed by stratum.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub dir: PathBuf,
    /// Rows per table: the snapshot's, and for the fact tables by day, the rows of the days
    /// this snapshot wrote.
    pub rows: BTreeMap<&'static str, usize>,
    /// (day, partition) files of the fact tables this snapshot wrote.
    pub days_written: usize,
    pub strata: Vec<StratumTotals>,
}

/// `fact_trip_safety` summed over one stratum (road type x weather x night, docs/design.md §4): the
/// trips, their exposure, and the events the facts hold for them (under a review budget, only
/// reviewed trips' critical events are in the facts).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StratumTotals {
    pub road_type: &'static str,
    pub weather: &'static str,
    pub night: bool,
    pub trips: u64,
    pub exposure_hours: f64,
    pub critical_events: u64,
    pub disengagements: u64,
}

/// Builds every table and writes them under `warehouse/snapshot_date=<date of snapshot_ms>/`.
pub fn write_snapshot(
    store: &Store,
    warehouse: &Path,
    snapshot_ms: i64,
    hazards: Option<&BTreeMap<String, VehicleHazard>>,
) -> Result<Snapshot, WarehouseError> {
    // Which days are closed, read before the facts: every record of a day closed then is among
    // the facts read after (a commit lands the records with the close, or before it).
    let restored = store.restore()?;
    let closed_through: BTreeMap<i32, i64> = restored
        .partitions
        .iter()
        .filter_map(|(p, s)| Some((p.source()?, s.closed_through_ms)))
        .collect();
    let mut facts = FactRows::default();
    // (Facts are kept on source partitions only.)
    store
        .for_each_fact(|partition, vehicle, bytes| facts.add(partition.stored(), vehicle, bytes))?;
    let FactRows {
        trips,
        counts,
        events: event_rows,
        dates,
    } = facts;

    let trip_rows: Vec<(&(String, String), &Trip, TripCounts)> = trips
        .iter()
        .map(|(k, t)| (k, t, counts.get(k).copied().unwrap_or_default()))
        .collect();
    let mut rows = BTreeMap::new();
    let mut days_written = 0;
    // Fact rows by day: each (day, partition) once, when all its bins have closed.
    let trip_days = by_closed_day(
        &trip_rows,
        |(_, t, _)| (t.partition, t.end_ms),
        &closed_through,
    );
    for ((day, partition), day_rows) in trip_days {
        let path = day_file(warehouse, "fact_trip_safety", day, partition);
        if write_once(&path, "fact_trip_safety", &trip_table(&day_rows))? {
            *rows.entry("fact_trip_safety").or_default() += day_rows.len();
            days_written += 1;
        }
    }
    // An event goes with its trip: in the file of the day the trip ended (where its trip's row
    // is). One whose trip is not known goes in the file of the first day its trip can no
    // longer end in (a trip lasts at most 48 h): once that day has closed, its trip, had it
    // come, would be known, so the event is never filed twice.
    let trip_end = |e: &EventRow| {
        trips
            .get(&(e.vehicle.clone(), e.trip_id.clone()))
            .map_or(e.time_ms + ORPHAN_EVENT_DELAY_MS, |t| t.end_ms)
    };
    let event_days = by_closed_day(&event_rows, |e| (e.partition, trip_end(e)), &closed_through);
    for ((day, partition), day_rows) in event_days {
        let path = day_file(warehouse, "fact_safety_event", day, partition);
        if write_once(&path, "fact_safety_event", &event_table(&day_rows))? {
            *rows.entry("fact_safety_event").or_default() += day_rows.len();
            days_written += 1;
        }
    }
    rows.entry("fact_trip_safety").or_default();
    rows.entry("fact_safety_event").or_default();

    let strata = strata(&trip_rows);
    // The snapshot's date, in its own column too (the DDL's partitioning column), not only in
    // the folder's name.
    let snapshot_day = snapshot_ms.div_euclid(DAY_MS) as i32;
    let dim_driver = driver_table(&trip_rows, snapshot_day);

    let priors: BTreeMap<String, crate::engine::Prior> = restored.priors.into_iter().collect();
    let mut vehicles = restored.vehicles;
    vehicles.sort_by(|a, b| a.0.cmp(&b.0));
    let dim_vehicle = vehicle_table(&vehicles, &priors, hazards, snapshot_day);
    let dim_date = date_table(&dates);
    let dim_event_type = event_type_table();
    let fact_regression = regression_table(store.alerts()?);
    let runs = store.model_runs()?;
    let fact_model_run = model_run_table(&runs);

    let dir = warehouse.join(format!("snapshot_date={}", utc_date(snapshot_ms)));
    std::fs::create_dir_all(&dir).map_err(|source| WarehouseError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for (name, table) in [
        ("dim_vehicle", &dim_vehicle),
        ("dim_driver", &dim_driver),
        ("dim_date", &dim_date),
        ("dim_event_type", &dim_event_type),
        ("fact_regression", &fact_regression),
        ("fact_model_run", &fact_model_run),
    ] {
        table
            .write(&dir.join(format!("{name}.parquet")), name)
            .map_err(|source| WarehouseError::Write {
                table: name,
                source,
            })?;
        rows.insert(name, table.rows());
    }
    Ok(Snapshot {
        dir,
        rows,
        days_written,
        strata,
    })
}

/// Rows grouped by (UTC day of their time, source partition), for the days whose bins have
/// all closed on their partition (no record can join them any more).
fn by_closed_day<'r, R>(
    rows: &'r [R],
    key: impl Fn(&R) -> (i32, i64),
    closed_through: &BTreeMap<i32, i64>,
) -> BTreeMap<(i64, i32), Vec<&'r R>> {
    let mut days: BTreeMap<(i64, i32), Vec<&R>> = BTreeMap::new();
    for row in rows {
        let (partition, time) = key(row);
        let day = time.div_euclid(DAY_MS) * DAY_MS;
        if closed_through
            .get(&partition)
            .is_some_and(|&closed| day + DAY_MS <= closed)
        {
            days.entry((day, partition)).or_default().push(row);
        }
    }
    days
}

/// `<warehouse>/<table>/end_date=YYYY-MM-DD/part-<partition>.parquet`: the day its trips ended.
pub fn day_file(warehouse: &Path, table: &str, day_ms: i64, partition: i32) -> PathBuf {
    warehouse
        .join(table)
        .join(format!("end_date={}", utc_date(day_ms)))
        .join(format!("part-{partition}.parquet"))
}

/// The start (ms) of the last day written for `partition` in both fact tables (the earlier of
/// the two tables' last days), if each has one: every closed day before it is written too, since
/// a snapshot writes all the days closed by then.
pub fn last_day_written(warehouse: &Path, partition: i32) -> Option<i64> {
    let file = format!("part-{partition}.parquet");
    let last = |table: &str| -> Option<i64> {
        std::fs::read_dir(warehouse.join(table))
            .ok()?
            .filter_map(Result::ok)
            .filter(|entry| entry.path().join(&file).exists())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                day_from_date(name.strip_prefix("end_date=")?)
            })
            .max()
    };
    Some(last("fact_trip_safety")?.min(last("fact_safety_event")?))
}

/// `YYYY-MM-DD` as the start of that day (ms since the epoch, UTC).
fn day_from_date(date: &str) -> Option<i64> {
    // Only a date that reads back as itself (not 2026-02-30, nor 2026-01-01-01).
    let ms = crate::generator::config::parse_date(date)?;
    (utc_date(ms) == date).then_some(ms)
}

/// Writes `table` to `path` unless a file is there already (a day is written once); returns
/// whether it wrote. Written beside and renamed, so that a reader never sees half a file.
fn write_once(path: &Path, name: &'static str, table: &Table) -> Result<bool, WarehouseError> {
    if path.exists() {
        return Ok(false);
    }
    let io = |source| WarehouseError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path.parent().expect("day files are in a folder")).map_err(io)?;
    let partial = path.with_extension("parquet.partial");
    table
        .write(&partial, name)
        .map_err(|source| WarehouseError::Write {
            table: name,
            source,
        })?;
    std::fs::rename(&partial, path).map_err(io)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_back_as_the_days_they_name() {
        for day in [-800, -1, 0, 59, 365 * 30 + 7, 20_000, 20_454, 60_000] {
            let ms = day * DAY_MS;
            assert_eq!(day_from_date(&utc_date(ms)), Some(ms), "day {day}");
        }
        for bad in ["2026-02-30", "2026-13-01", "2026-1-x", "2026-01-01-01", ""] {
            assert_eq!(day_from_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_last_day_written_is_the_earlier_of_the_fact_tables_last_days_of_a_partition() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |table: &str, day: i64, partition: i32| {
            let path = day_file(dir.path(), table, day * DAY_MS, partition);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        };
        assert_eq!(last_day_written(dir.path(), 0), None, "nothing written");
        touch("fact_trip_safety", 20_000, 0);
        touch("fact_trip_safety", 20_003, 0);
        assert_eq!(
            last_day_written(dir.path(), 0),
            None,
            "no event day written: a rebuild takes every bin kept"
        );
        touch("fact_safety_event", 20_002, 0);
        touch("fact_safety_event", 20_005, 1);
        assert_eq!(last_day_written(dir.path(), 0), Some(20_002 * DAY_MS));
        assert_eq!(last_day_written(dir.path(), 1), None, "per partition");
    }
}
