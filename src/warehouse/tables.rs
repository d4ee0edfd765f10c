//! The warehouse's rows and tables, built by pure functions: one per table, from what the
//! state store holds (read by [`super::write_snapshot`], which also writes the files).

use std::collections::{BTreeMap, BTreeSet};

use super::parquet::{Table, Values};
use super::{DAY_MS, StratumTotals};
use crate::codec;
use crate::engine::{Prior, VehicleState};
use crate::model::{AlertStatus, EventType, Payload, RegressionAlert, SafetyEvent, utc_date};
use crate::refit::result::{Diagnostics, VehicleHazard};
use crate::refit::run::{ModelRun, RunStratum};

/// One `fact_trip_safety` row, less its event counts.
#[derive(Default)]
pub(super) struct Trip {
    pub(super) partition: i32,
    pub(super) vehicle: String,
    pub(super) driver: String,
    pub(super) start_ms: i64,
    pub(super) end_ms: i64,
    pub(super) exposure_hours: f64,
    pub(super) distance_km: f64,
    pub(super) mode: &'static str,
    pub(super) road_type: &'static str,
    pub(super) weather: &'static str,
    pub(super) night: bool,
    pub(super) firmware: String,
    pub(super) model: String,
}

/// A trip's event counts.
#[derive(Default, Clone, Copy)]
pub(super) struct TripCounts {
    pub(super) safety_events: i64,
    pub(super) critical: i64,
    pub(super) disengagements: i64,
}

/// One `fact_safety_event` row.
pub(super) struct EventRow {
    pub(super) partition: i32,
    pub(super) event_id: String,
    pub(super) trip_id: String,
    pub(super) vehicle: String,
    pub(super) time_ms: i64,
    pub(super) event_type: &'static str,
    pub(super) severity: &'static str,
    pub(super) speed_kph: f64,
    pub(super) critical: bool,
}

pub(super) fn some<T>(values: impl IntoIterator<Item = T>) -> Vec<Option<T>> {
    values.into_iter().map(Some).collect()
}

/// A table built row by row: each column a name and what it reads from a row (`maybe_*`: a
/// value that may be null).
pub(super) struct Columns<'r, R> {
    rows: &'r [R],
    columns: Vec<(&'static str, Values)>,
}

impl<'r, R> Columns<'r, R> {
    pub(super) fn over(rows: &'r [R]) -> Self {
        Columns {
            rows,
            columns: Vec::new(),
        }
    }

    fn read<T>(&self, f: impl Fn(&R) -> Option<T>) -> Vec<Option<T>> {
        self.rows.iter().map(f).collect()
    }

    fn with(mut self, name: &'static str, values: Values) -> Self {
        self.columns.push((name, values));
        self
    }

    pub(super) fn text(self, name: &'static str, f: impl Fn(&R) -> String) -> Self {
        let values = Values::Text(self.read(|r| Some(f(r))));
        self.with(name, values)
    }

    pub(super) fn long(self, name: &'static str, f: impl Fn(&R) -> i64) -> Self {
        self.maybe_long(name, |r| Some(f(r)))
    }

    pub(super) fn maybe_long(self, name: &'static str, f: impl Fn(&R) -> Option<i64>) -> Self {
        let values = Values::Long(self.read(f));
        self.with(name, values)
    }

    pub(super) fn double(self, name: &'static str, f: impl Fn(&R) -> f64) -> Self {
        self.maybe_double(name, |r| Some(f(r)))
    }

    pub(super) fn maybe_double(self, name: &'static str, f: impl Fn(&R) -> Option<f64>) -> Self {
        let values = Values::Double(self.read(f));
        self.with(name, values)
    }

    pub(super) fn bool(self, name: &'static str, f: impl Fn(&R) -> bool) -> Self {
        let values = Values::Bool(self.read(|r| Some(f(r))));
        self.with(name, values)
    }

    pub(super) fn timestamp(self, name: &'static str, f: impl Fn(&R) -> i64) -> Self {
        self.maybe_timestamp(name, |r| Some(f(r)))
    }

    pub(super) fn maybe_timestamp(self, name: &'static str, f: impl Fn(&R) -> Option<i64>) -> Self {
        let values = Values::Timestamp(self.read(f));
        self.with(name, values)
    }

    /// Days since the epoch of a time in ms.
    pub(super) fn date(self, name: &'static str, f: impl Fn(&R) -> i64) -> Self {
        let values = Values::Date(self.read(|r| Some(f(r).div_euclid(DAY_MS) as i32)));
        self.with(name, values)
    }

    pub(super) fn table(self) -> Table {
        Table {
            columns: self.columns,
        }
    }
}

/// The fact rows of the records the store keeps: trips (by vehicle and trip id), their event
/// counts, safety events, and the days any of them touch.
#[derive(Default)]
pub(super) struct FactRows {
    pub(super) trips: BTreeMap<(String, String), Trip>,
    pub(super) counts: BTreeMap<(String, String), TripCounts>,
    pub(super) events: Vec<EventRow>,
    pub(super) dates: BTreeSet<i64>,
}

impl FactRows {
    /// Adds one kept record of `vehicle` on `partition` (undecodable bytes add nothing).
    pub(super) fn add(&mut self, partition: i32, vehicle: &str, bytes: &[u8]) {
        let Ok(event) = codec::decode(bytes) else {
            return;
        };
        match &event.payload {
            Payload::Trip(t) => {
                self.dates.insert(t.start_time_ms.div_euclid(DAY_MS));
                self.dates.insert(t.end_time_ms.div_euclid(DAY_MS));
                self.trips.insert(
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
                let c = self
                    .counts
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
            let c = self
                .counts
                .entry((vehicle.to_string(), s.trip_id.to_string()))
                .or_default();
            c.safety_events += 1;
            c.critical += i64::from(s.is_critical());
            self.dates.insert(time.div_euclid(DAY_MS));
            self.events.push(EventRow {
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
    }
}

pub(super) fn strata(trips: &[(&(String, String), &Trip, TripCounts)]) -> Vec<StratumTotals> {
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

impl StratumTotals {
    /// The stratum as the model run keeps it.
    pub fn as_run_stratum(&self) -> RunStratum {
        RunStratum {
            road_type: self.road_type.to_string(),
            weather: self.weather.to_string(),
            night: self.night,
            trips: self.trips,
            exposure_hours: self.exposure_hours,
            critical_events: self.critical_events,
            disengagements: self.disengagements,
        }
    }
}

/// `dim_driver`: each driver's first vehicle seen, trips and exposure.
pub(super) fn driver_table(
    trip_rows: &[(&(String, String), &Trip, TripCounts)],
    snapshot_day: i32,
) -> Table {
    // Drivers: first vehicle seen and trip counts.
    let mut drivers: BTreeMap<&str, (&str, i64, f64)> = BTreeMap::new();
    for (_, t, _) in trip_rows {
        let d = drivers
            .entry(t.driver.as_str())
            .or_insert((t.vehicle.as_str(), 0, 0.0));
        d.1 += 1;
        d.2 += t.exposure_hours;
    }
    let drivers: Vec<_> = drivers.into_iter().collect();
    let snapshot_ms = i64::from(snapshot_day) * DAY_MS;
    Columns::over(&drivers)
        .date("snapshot_date", |_| snapshot_ms)
        .text("driver_id", |(d, _)| d.to_string())
        .text("first_vehicle_id", |(_, d)| d.0.to_string())
        .long("trips", |(_, d)| d.1)
        .double("exposure_hours", |(_, d)| d.2)
        .table()
}

/// `dim_vehicle`: each vehicle's attributes, totals, prior and (after a refit) hazard.
pub(super) fn vehicle_table(
    vehicles: &[(String, VehicleState)],
    priors: &BTreeMap<String, Prior>,
    hazards: Option<&BTreeMap<String, VehicleHazard>>,
    snapshot_day: i32,
) -> Table {
    let hazard = |id: &str, f: fn(&VehicleHazard) -> f64| hazards.and_then(|h| h.get(id)).map(f);
    let prior = |id: &str, f: fn(&Prior) -> f64| priors.get(id).map(f);
    let snapshot_ms = i64::from(snapshot_day) * DAY_MS;
    Columns::over(vehicles)
        .date("snapshot_date", |_| snapshot_ms)
        .text("vehicle_id", |(id, _)| id.clone())
        .text("vehicle_model", |(_, v)| v.meta.vehicle_model.clone())
        .text("firmware_version", |(_, v)| v.meta.firmware_version.clone())
        .timestamp("last_event_time", |(_, v)| v.meta.last_event_time_ms)
        .double("exposure_hours", |(_, v)| v.totals().exposure_hours())
        .long("critical_events", |(_, v)| v.totals().critical as i64)
        .maybe_double("prior_a0", |(id, _)| prior(id, |p| p.a0))
        .maybe_double("prior_b0", |(id, _)| prior(id, |p| p.b0))
        .maybe_double("hazard_per_hour_mean", |(id, _)| {
            hazard(id, |h| h.rate_per_hour_mean)
        })
        .maybe_double("hazard_per_hour_q2_5", |(id, _)| {
            hazard(id, |h| h.rate_q2_5)
        })
        .maybe_double("hazard_per_hour_q97_5", |(id, _)| {
            hazard(id, |h| h.rate_q97_5)
        })
        .table()
}

/// `dim_date`: the days the facts touch.
pub(super) fn date_table(dates: &BTreeSet<i64>) -> Table {
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
}

/// `dim_event_type`: the event types and whether they are critical at any severity.
pub(super) fn event_type_table() -> Table {
    Table {
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
    }
}

/// `fact_regression`: one row per episode, from its alerts.
pub(super) fn regression_table(alerts: Vec<RegressionAlert>) -> Table {
    // Episodes: alerts grouped by the part of their id before the status.
    let mut episodes: BTreeMap<String, Vec<RegressionAlert>> = BTreeMap::new();
    for alert in alerts {
        let episode = alert
            .alert_id
            .rsplit_once('/')
            .map_or(alert.alert_id.clone(), |(e, _)| e.to_string());
        episodes.entry(episode).or_default().push(alert);
    }
    for list in episodes.values_mut() {
        list.sort_by_key(|a| a.detected_at);
    }
    let episodes: Vec<(String, Vec<RegressionAlert>)> = episodes.into_iter().collect();
    let first = |l: &[RegressionAlert]| l.first().cloned().expect("episodes have alerts");
    let last = |l: &[RegressionAlert]| l.last().cloned().expect("episodes have alerts");
    let resolved = |l: &[RegressionAlert]| last(l).status == AlertStatus::Resolved;
    let finite = |v: f64| v.is_finite().then_some(v);
    Columns::over(&episodes)
        .text("episode_id", |(id, _)| id.clone())
        .text("key_kind", |(_, l)| first(l).key_kind.name().to_string())
        .text("key", |(_, l)| first(l).key)
        .text("hazard_class", |(_, l)| {
            first(l).hazard_class.name().to_string()
        })
        .text("status", |(_, l)| {
            if resolved(l) { "RESOLVED" } else { "OPEN" }.to_string()
        })
        .timestamp("onset", |(_, l)| first(l).onset_estimate)
        .timestamp("detected_at", |(_, l)| first(l).detected_at)
        .maybe_timestamp("resolved_at", |(_, l)| {
            resolved(l).then(|| last(l).detected_at)
        })
        .double("mttd_days", |(_, l)| first(l).time_to_detection_days())
        .maybe_double("hr_median", |(_, l)| finite(first(l).hr_median))
        .maybe_double("hr_low", |(_, l)| finite(first(l).hr_low))
        .maybe_double("hr_high", |(_, l)| finite(first(l).hr_high))
        .double("p_regression", |(_, l)| first(l).p_regression)
        .text("prior_source", |(_, l)| first(l).prior_source)
        .table()
}

/// `fact_model_run`: one row per refit the store keeps. A number the run could not compute
/// (NaN), or a part an older run did not record, is null.
pub(super) fn model_run_table(runs: &[ModelRun]) -> Table {
    let finite = |x: f64| x.is_finite().then_some(x);
    let diagnostic = |r: &ModelRun, f: fn(&Diagnostics) -> f64| {
        r.diagnostics.as_ref().and_then(|d| finite(f(d)))
    };
    let mean_of = |r: &ModelRun, name: &str| r.parameter(name).and_then(|p| finite(p.mean));
    Columns::over(runs)
        .long("run_id", |r| r.outline.run_id)
        .timestamp("run_time", |r| r.outline.run_id)
        .bool("converged", |r| r.outline.converged)
        .long("vehicles", |r| r.outline.vehicles as i64)
        .long("intervals", |r| r.outline.intervals as i64)
        .long("events", |r| r.outline.events as i64)
        .maybe_double("max_rhat", |r| diagnostic(r, |d| d.max_rhat))
        .maybe_double("min_ess_bulk", |r| diagnostic(r, |d| d.min_ess_bulk))
        .maybe_long("divergences", |r| {
            r.diagnostics.as_ref().map(|d| d.divergences as i64)
        })
        .maybe_double("ebfmi", |r| diagnostic(r, |d| d.ebfmi))
        .maybe_double("alpha_mean", |r| mean_of(r, "alpha"))
        .maybe_double("mu_mean", |r| mean_of(r, "mu"))
        .maybe_double("sigma_mean", |r| mean_of(r, "sigma"))
        .maybe_double("ppc_p_value", |r| {
            r.posterior_predictive
                .as_ref()
                .and_then(|c| finite(c.p_value))
        })
        .maybe_double("sampling_s", |r| finite(r.sampling_s))
        .table()
}

/// `fact_safety_event` rows as a table.
pub(super) fn event_table(rows: &[&EventRow]) -> Table {
    Columns::over(rows)
        .text("event_id", |e| e.event_id.clone())
        .text("trip_id", |e| e.trip_id.clone())
        .text("vehicle_id", |e| e.vehicle.clone())
        .timestamp("event_time", |e| e.time_ms)
        .date("date", |e| e.time_ms)
        .text("event_type", |e| e.event_type.to_string())
        .text("severity", |e| e.severity.to_string())
        .double("speed_kph", |e| e.speed_kph)
        .bool("critical", |e| e.critical)
        .table()
}

/// `fact_trip_safety` rows as a table.
pub(super) fn trip_table(trip_rows: &[&(&(String, String), &Trip, TripCounts)]) -> Table {
    Columns::over(trip_rows)
        .text("trip_id", |(k, _, _)| k.1.clone())
        .text("vehicle_id", |(_, t, _)| t.vehicle.clone())
        .text("driver_id", |(_, t, _)| t.driver.clone())
        // A trip's date is its end's, as the bins count it.
        .date("date", |(_, t, _)| t.end_ms)
        .timestamp("start_time", |(_, t, _)| t.start_ms)
        .timestamp("end_time", |(_, t, _)| t.end_ms)
        .double("exposure_hours", |(_, t, _)| t.exposure_hours)
        .double("distance_km", |(_, t, _)| t.distance_km)
        .text("mode", |(_, t, _)| t.mode.to_string())
        .text("road_type", |(_, t, _)| t.road_type.to_string())
        .text("weather", |(_, t, _)| t.weather.to_string())
        .bool("night", |(_, t, _)| t.night)
        .text("firmware_version", |(_, t, _)| t.firmware.clone())
        .text("vehicle_model", |(_, t, _)| t.model.clone())
        .long("safety_events", |(_, _, c)| c.safety_events)
        .long("critical_events", |(_, _, c)| c.critical)
        .long("disengagements", |(_, _, c)| c.disengagements)
        .table()
}
