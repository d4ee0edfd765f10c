//! Star-schema Parquet for BI tools (DESIGN §6), matching `schemas/warehouse/*.sql`.
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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use self::parquet::{Table, Values, WriteError};
use crate::codec;
use crate::model::{AlertStatus, EventType, Payload, SafetyEvent, utc_date};
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

/// `fact_trip_safety` summed over one stratum (road type x weather x night, DESIGN §4): the
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

fn strata(trips: &[(&(String, String), &Trip, TripCounts)]) -> Vec<StratumTotals> {
    let mut by_stratum: BTreeMap<(&str, &str, bool), StratumTotals> = BTreeMap::new();
    for (_, t, c) in trips {
        let s = by_stratum
            .entry((t.road_type, t.weather, t.night))
            .or_insert_with(|| StratumTotals {
                road_type: t.road_type,
                weather: t.weather,
                night: t.night,
                ..Default::default()
            });
        s.trips += 1;
        s.exposure_hours += t.exposure_hours;
        s.critical_events += c.critical as u64;
        s.disengagements += c.disengagements as u64;
    }
    by_stratum.into_values().collect()
}

#[derive(Default)]
struct Trip {
    partition: i32,
    vehicle: String,
    driver: String,
    start_ms: i64,
    end_ms: i64,
    exposure_hours: f64,
    distance_km: f64,
    mode: &'static str,
    road_type: &'static str,
    weather: &'static str,
    night: bool,
    firmware: String,
    model: String,
}

#[derive(Default, Clone, Copy)]
struct TripCounts {
    safety_events: i64,
    critical: i64,
    disengagements: i64,
}

/// One `fact_safety_event` row.
struct EventRow {
    partition: i32,
    event_id: String,
    trip_id: String,
    vehicle: String,
    time_ms: i64,
    event_type: &'static str,
    severity: &'static str,
    speed_kph: f64,
    critical: bool,
}

fn some<T>(values: impl IntoIterator<Item = T>) -> Vec<Option<T>> {
    values.into_iter().map(Some).collect()
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
        .map(|(p, s)| (*p, s.closed_through_ms))
        .collect();
    let mut trips: BTreeMap<(String, String), Trip> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), TripCounts> = BTreeMap::new();
    let mut event_rows: Vec<EventRow> = Vec::new();
    let mut dates: BTreeSet<i64> = BTreeSet::new();
    store.for_each_fact(|partition, vehicle, bytes| {
        let Ok(event) = codec::decode(bytes) else {
            return;
        };
        match &event.payload {
            Payload::Trip(t) => {
                dates.insert(t.start_time_ms.div_euclid(DAY_MS));
                dates.insert(t.end_time_ms.div_euclid(DAY_MS));
                trips.insert(
                    (vehicle.to_string(), t.trip_id.to_string()),
                    Trip {
                        partition,
                        vehicle: vehicle.to_string(),
                        driver: t.driver_id.to_string(),
                        start_ms: t.start_time_ms,
                        end_ms: t.end_time_ms,
                        exposure_hours: t.duration_s / 3600.0,
                        distance_km: t.distance_km,
                        mode: t.mode.symbol(),
                        road_type: t.road_type.symbol(),
                        weather: t.weather.symbol(),
                        night: t.night,
                        firmware: t.firmware_version.to_string(),
                        model: t.vehicle_model.to_string(),
                    },
                );
            }
            Payload::Mode(m) => {
                let c = counts
                    .entry((vehicle.to_string(), m.trip_id.to_string()))
                    .or_default();
                c.disengagements += i64::from(m.is_disengagement());
            }
            Payload::Safety(_) | Payload::Review(_) => {}
        }
        // Safety events come one per record, or several in a review service's result.
        let safety: Vec<(i64, &SafetyEvent<'_>)> = match &event.payload {
            Payload::Safety(s) => vec![(event.event_time_ms, s)],
            Payload::Review(r) => r.events.iter().map(|(time, e)| (*time, e)).collect(),
            _ => Vec::new(),
        };
        for (time, s) in safety {
            let c = counts
                .entry((vehicle.to_string(), s.trip_id.to_string()))
                .or_default();
            c.safety_events += 1;
            c.critical += i64::from(s.is_critical());
            dates.insert(time.div_euclid(DAY_MS));
            event_rows.push(EventRow {
                partition,
                event_id: s.event_id.to_string(),
                trip_id: s.trip_id.to_string(),
                vehicle: vehicle.to_string(),
                time_ms: time,
                event_type: s.event_type.symbol(),
                severity: s.severity.symbol(),
                speed_kph: s.speed_kph,
                critical: s.is_critical(),
            });
        }
    })?;

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
    // Drivers: first vehicle seen and trip counts.
    let mut drivers: BTreeMap<&str, (&str, i64, f64)> = BTreeMap::new();
    for (_, t, _) in &trip_rows {
        let d = drivers
            .entry(t.driver.as_str())
            .or_insert((t.vehicle.as_str(), 0, 0.0));
        d.1 += 1;
        d.2 += t.exposure_hours;
    }
    // The snapshot's date, in its own column too (the DDL's partitioning column), not only in
    // the folder's name.
    let snapshot_day = snapshot_ms.div_euclid(DAY_MS) as i32;
    let dim_driver = Table {
        columns: vec![
            (
                "snapshot_date",
                Values::Date(vec![Some(snapshot_day); drivers.len()]),
            ),
            (
                "driver_id",
                Values::Text(some(drivers.keys().map(|d| d.to_string()))),
            ),
            (
                "first_vehicle_id",
                Values::Text(some(drivers.values().map(|d| d.0.to_string()))),
            ),
            ("trips", Values::Long(some(drivers.values().map(|d| d.1)))),
            (
                "exposure_hours",
                Values::Double(some(drivers.values().map(|d| d.2))),
            ),
        ],
    };

    let priors: BTreeMap<String, crate::engine::Prior> = restored.priors.into_iter().collect();
    let mut vehicles = restored.vehicles;
    vehicles.sort_by(|a, b| a.0.cmp(&b.0));
    let hazard = |id: &str, f: fn(&VehicleHazard) -> f64| hazards.and_then(|h| h.get(id)).map(f);
    let dim_vehicle = Table {
        columns: vec![
            (
                "snapshot_date",
                Values::Date(vec![Some(snapshot_day); vehicles.len()]),
            ),
            (
                "vehicle_id",
                Values::Text(some(vehicles.iter().map(|(id, _)| id.clone()))),
            ),
            (
                "vehicle_model",
                Values::Text(some(
                    vehicles.iter().map(|(_, v)| v.meta.vehicle_model.clone()),
                )),
            ),
            (
                "firmware_version",
                Values::Text(some(
                    vehicles
                        .iter()
                        .map(|(_, v)| v.meta.firmware_version.clone()),
                )),
            ),
            (
                "last_event_time",
                Values::Timestamp(some(
                    vehicles.iter().map(|(_, v)| v.meta.last_event_time_ms),
                )),
            ),
            (
                "exposure_hours",
                Values::Double(some(
                    vehicles.iter().map(|(_, v)| v.totals().exposure_hours()),
                )),
            ),
            (
                "critical_events",
                Values::Long(some(
                    vehicles.iter().map(|(_, v)| v.totals().critical as i64),
                )),
            ),
            (
                "prior_a0",
                Values::Double(
                    vehicles
                        .iter()
                        .map(|(id, _)| priors.get(id).map(|p| p.a0))
                        .collect(),
                ),
            ),
            (
                "prior_b0",
                Values::Double(
                    vehicles
                        .iter()
                        .map(|(id, _)| priors.get(id).map(|p| p.b0))
                        .collect(),
                ),
            ),
            (
                "hazard_per_hour_mean",
                Values::Double(
                    vehicles
                        .iter()
                        .map(|(id, _)| hazard(id, |h| h.rate_per_hour_mean))
                        .collect(),
                ),
            ),
            (
                "hazard_per_hour_q2_5",
                Values::Double(
                    vehicles
                        .iter()
                        .map(|(id, _)| hazard(id, |h| h.rate_q2_5))
                        .collect(),
                ),
            ),
            (
                "hazard_per_hour_q97_5",
                Values::Double(
                    vehicles
                        .iter()
                        .map(|(id, _)| hazard(id, |h| h.rate_q97_5))
                        .collect(),
                ),
            ),
        ],
    };

    let dim_date = {
        let days: Vec<i64> = dates.iter().copied().collect();
        let parts: Vec<(i64, i64, i64)> = days
            .iter()
            .map(|d| {
                let text = utc_date(d * DAY_MS);
                let n: Vec<i64> = text.split('-').map(|p| p.parse().unwrap_or(0)).collect();
                (n[0], n[1], n[2])
            })
            .collect();
        Table {
            columns: vec![
                ("date", Values::Date(some(days.iter().map(|d| *d as i32)))),
                ("year", Values::Long(some(parts.iter().map(|p| p.0)))),
                ("month", Values::Long(some(parts.iter().map(|p| p.1)))),
                ("day", Values::Long(some(parts.iter().map(|p| p.2)))),
                // 1970-01-01 was a Thursday: ISO weekday 4.
                (
                    "iso_weekday",
                    Values::Long(some(days.iter().map(|d| (d + 3).rem_euclid(7) + 1))),
                ),
            ],
        }
    };

    let dim_event_type = Table {
        columns: vec![
            (
                "event_type",
                Values::Text(some(EventType::ALL.iter().map(|e| e.symbol().to_string()))),
            ),
            (
                "critical_regardless_of_severity",
                Values::Bool(some(
                    EventType::ALL
                        .iter()
                        .map(|e| matches!(e, EventType::NearMiss | EventType::Collision)),
                )),
            ),
        ],
    };

    // Episodes: alerts grouped by the part of their id before the status.
    let mut episodes: BTreeMap<String, Vec<crate::model::RegressionAlert>> = BTreeMap::new();
    for alert in store.alerts()? {
        let episode = alert
            .alert_id
            .rsplit_once('/')
            .map_or(alert.alert_id.clone(), |(e, _)| e.to_string());
        episodes.entry(episode).or_default().push(alert);
    }
    for list in episodes.values_mut() {
        list.sort_by_key(|a| a.detected_at);
    }
    let first =
        |l: &Vec<crate::model::RegressionAlert>| l.first().cloned().expect("episodes have alerts");
    let last =
        |l: &Vec<crate::model::RegressionAlert>| l.last().cloned().expect("episodes have alerts");
    let finite = |v: f64| v.is_finite().then_some(v);
    let fact_regression = Table {
        columns: vec![
            ("episode_id", Values::Text(some(episodes.keys().cloned()))),
            (
                "key_kind",
                Values::Text(some(
                    episodes
                        .values()
                        .map(|l| first(l).key_kind.name().to_string()),
                )),
            ),
            (
                "key",
                Values::Text(some(episodes.values().map(|l| first(l).key))),
            ),
            (
                "hazard_class",
                Values::Text(some(
                    episodes
                        .values()
                        .map(|l| first(l).hazard_class.name().to_string()),
                )),
            ),
            (
                "status",
                Values::Text(some(episodes.values().map(|l| {
                    if last(l).status == AlertStatus::Resolved {
                        "RESOLVED".to_string()
                    } else {
                        "OPEN".to_string()
                    }
                }))),
            ),
            (
                "onset",
                Values::Timestamp(some(episodes.values().map(|l| first(l).onset_estimate))),
            ),
            (
                "detected_at",
                Values::Timestamp(some(episodes.values().map(|l| first(l).detected_at))),
            ),
            (
                "resolved_at",
                Values::Timestamp(
                    episodes
                        .values()
                        .map(|l| {
                            (last(l).status == AlertStatus::Resolved).then(|| last(l).detected_at)
                        })
                        .collect(),
                ),
            ),
            (
                "mttd_days",
                Values::Double(some(
                    episodes.values().map(|l| first(l).time_to_detection_days()),
                )),
            ),
            (
                "hr_median",
                Values::Double(
                    episodes
                        .values()
                        .map(|l| finite(first(l).hr_median))
                        .collect(),
                ),
            ),
            (
                "hr_low",
                Values::Double(episodes.values().map(|l| finite(first(l).hr_low)).collect()),
            ),
            (
                "hr_high",
                Values::Double(
                    episodes
                        .values()
                        .map(|l| finite(first(l).hr_high))
                        .collect(),
                ),
            ),
            (
                "p_regression",
                Values::Double(some(episodes.values().map(|l| first(l).p_regression))),
            ),
            (
                "prior_source",
                Values::Text(some(episodes.values().map(|l| first(l).prior_source))),
            ),
        ],
    };

    let runs = store.model_runs()?;
    let num = |r: &serde_json::Value, path: &[&str]| {
        path.iter()
            .try_fold(r, |v, k| v.get(k))
            .and_then(|v| v.as_f64())
    };
    let fact_model_run = Table {
        columns: vec![
            (
                "run_id",
                Values::Long(runs.iter().map(|r| r["run_id"].as_i64()).collect()),
            ),
            (
                "run_time",
                Values::Timestamp(runs.iter().map(|r| r["run_id"].as_i64()).collect()),
            ),
            (
                "converged",
                Values::Bool(runs.iter().map(|r| r["converged"].as_bool()).collect()),
            ),
            (
                "vehicles",
                Values::Long(runs.iter().map(|r| r["vehicles"].as_i64()).collect()),
            ),
            (
                "intervals",
                Values::Long(runs.iter().map(|r| r["intervals"].as_i64()).collect()),
            ),
            (
                "events",
                Values::Long(runs.iter().map(|r| r["events"].as_i64()).collect()),
            ),
            (
                "max_rhat",
                Values::Double(
                    runs.iter()
                        .map(|r| num(r, &["diagnostics", "max_rhat"]))
                        .collect(),
                ),
            ),
            (
                "min_ess_bulk",
                Values::Double(
                    runs.iter()
                        .map(|r| num(r, &["diagnostics", "min_ess_bulk"]))
                        .collect(),
                ),
            ),
            (
                "divergences",
                Values::Long(
                    runs.iter()
                        .map(|r| r["diagnostics"]["divergences"].as_i64())
                        .collect(),
                ),
            ),
            (
                "ebfmi",
                Values::Double(
                    runs.iter()
                        .map(|r| num(r, &["diagnostics", "ebfmi"]))
                        .collect(),
                ),
            ),
            (
                "alpha_mean",
                Values::Double(runs.iter().map(|r| num(r, &["alpha", "mean"])).collect()),
            ),
            (
                "mu_mean",
                Values::Double(runs.iter().map(|r| num(r, &["mu", "mean"])).collect()),
            ),
            (
                "sigma_mean",
                Values::Double(runs.iter().map(|r| num(r, &["sigma", "mean"])).collect()),
            ),
            (
                "ppc_p_value",
                Values::Double(
                    runs.iter()
                        .map(|r| num(r, &["posterior_predictive", "p_value"]))
                        .collect(),
                ),
            ),
            (
                "sampling_s",
                Values::Double(runs.iter().map(|r| num(r, &["sampling_s"])).collect()),
            ),
        ],
    };

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

/// `fact_safety_event` rows as a table.
fn event_table(rows: &[&EventRow]) -> Table {
    Table {
        columns: vec![
            (
                "event_id",
                Values::Text(some(rows.iter().map(|e| e.event_id.clone()))),
            ),
            (
                "trip_id",
                Values::Text(some(rows.iter().map(|e| e.trip_id.clone()))),
            ),
            (
                "vehicle_id",
                Values::Text(some(rows.iter().map(|e| e.vehicle.clone()))),
            ),
            (
                "event_time",
                Values::Timestamp(some(rows.iter().map(|e| e.time_ms))),
            ),
            (
                "date",
                Values::Date(some(
                    rows.iter().map(|e| e.time_ms.div_euclid(DAY_MS) as i32),
                )),
            ),
            (
                "event_type",
                Values::Text(some(rows.iter().map(|e| e.event_type.to_string()))),
            ),
            (
                "severity",
                Values::Text(some(rows.iter().map(|e| e.severity.to_string()))),
            ),
            (
                "speed_kph",
                Values::Double(some(rows.iter().map(|e| e.speed_kph))),
            ),
            (
                "critical",
                Values::Bool(some(rows.iter().map(|e| e.critical))),
            ),
        ],
    }
}

/// `fact_trip_safety` rows as a table.
fn trip_table(trip_rows: &[&(&(String, String), &Trip, TripCounts)]) -> Table {
    Table {
        columns: vec![
            (
                "trip_id",
                Values::Text(some(trip_rows.iter().map(|(k, _, _)| k.1.clone()))),
            ),
            (
                "vehicle_id",
                Values::Text(some(trip_rows.iter().map(|(_, t, _)| t.vehicle.clone()))),
            ),
            (
                "driver_id",
                Values::Text(some(trip_rows.iter().map(|(_, t, _)| t.driver.clone()))),
            ),
            (
                "date",
                Values::Date(some(
                    trip_rows
                        .iter()
                        // A trip's date is its end's, as the bins count it.
                        .map(|(_, t, _)| t.end_ms.div_euclid(DAY_MS) as i32),
                )),
            ),
            (
                "start_time",
                Values::Timestamp(some(trip_rows.iter().map(|(_, t, _)| t.start_ms))),
            ),
            (
                "end_time",
                Values::Timestamp(some(trip_rows.iter().map(|(_, t, _)| t.end_ms))),
            ),
            (
                "exposure_hours",
                Values::Double(some(trip_rows.iter().map(|(_, t, _)| t.exposure_hours))),
            ),
            (
                "distance_km",
                Values::Double(some(trip_rows.iter().map(|(_, t, _)| t.distance_km))),
            ),
            (
                "mode",
                Values::Text(some(trip_rows.iter().map(|(_, t, _)| t.mode.to_string()))),
            ),
            (
                "road_type",
                Values::Text(some(
                    trip_rows.iter().map(|(_, t, _)| t.road_type.to_string()),
                )),
            ),
            (
                "weather",
                Values::Text(some(
                    trip_rows.iter().map(|(_, t, _)| t.weather.to_string()),
                )),
            ),
            (
                "night",
                Values::Bool(some(trip_rows.iter().map(|(_, t, _)| t.night))),
            ),
            (
                "firmware_version",
                Values::Text(some(trip_rows.iter().map(|(_, t, _)| t.firmware.clone()))),
            ),
            (
                "vehicle_model",
                Values::Text(some(trip_rows.iter().map(|(_, t, _)| t.model.clone()))),
            ),
            (
                "safety_events",
                Values::Long(some(trip_rows.iter().map(|(_, _, c)| c.safety_events))),
            ),
            (
                "critical_events",
                Values::Long(some(trip_rows.iter().map(|(_, _, c)| c.critical))),
            ),
            (
                "disengagements",
                Values::Long(some(trip_rows.iter().map(|(_, _, c)| c.disengagements))),
            ),
        ],
    }
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
