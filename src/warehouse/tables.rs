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
    Table {
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
    }
}

/// `dim_vehicle`: each vehicle's attributes, totals, prior and (after a refit) hazard.
pub(super) fn vehicle_table(
    vehicles: &[(String, VehicleState)],
    priors: &BTreeMap<String, Prior>,
    hazards: Option<&BTreeMap<String, VehicleHazard>>,
    snapshot_day: i32,
) -> Table {
    let hazard = |id: &str, f: fn(&VehicleHazard) -> f64| hazards.and_then(|h| h.get(id)).map(f);
    Table {
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
    }
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
    let first = |l: &Vec<RegressionAlert>| l.first().cloned().expect("episodes have alerts");
    let last = |l: &Vec<RegressionAlert>| l.last().cloned().expect("episodes have alerts");
    let finite = |v: f64| v.is_finite().then_some(v);
    Table {
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
    }
}

/// `fact_model_run`: one row per refit the store keeps. A number the run could not compute
/// (NaN), or a part an older run did not record, is null.
pub(super) fn model_run_table(runs: &[ModelRun]) -> Table {
    let finite = |x: f64| x.is_finite().then_some(x);
    let diagnostic = |f: fn(&Diagnostics) -> f64| -> Values {
        let column = runs
            .iter()
            .map(|r| r.diagnostics.as_ref().and_then(|d| finite(f(d))));
        Values::Double(column.collect())
    };
    let mean_of = |name: &str| -> Values {
        let column = runs
            .iter()
            .map(|r| r.parameter(name).and_then(|p| finite(p.mean)));
        Values::Double(column.collect())
    };
    let long = |f: fn(&ModelRun) -> i64| Values::Long(runs.iter().map(|r| Some(f(r))).collect());
    Table {
        columns: vec![
            ("run_id", long(|r| r.outline.run_id)),
            (
                "run_time",
                Values::Timestamp(runs.iter().map(|r| Some(r.outline.run_id)).collect()),
            ),
            (
                "converged",
                Values::Bool(runs.iter().map(|r| Some(r.outline.converged)).collect()),
            ),
            ("vehicles", long(|r| r.outline.vehicles as i64)),
            ("intervals", long(|r| r.outline.intervals as i64)),
            ("events", long(|r| r.outline.events as i64)),
            ("max_rhat", diagnostic(|d| d.max_rhat)),
            ("min_ess_bulk", diagnostic(|d| d.min_ess_bulk)),
            (
                "divergences",
                Values::Long(
                    runs.iter()
                        .map(|r| r.diagnostics.as_ref().map(|d| d.divergences as i64))
                        .collect(),
                ),
            ),
            ("ebfmi", diagnostic(|d| d.ebfmi)),
            ("alpha_mean", mean_of("alpha")),
            ("mu_mean", mean_of("mu")),
            ("sigma_mean", mean_of("sigma")),
            (
                "ppc_p_value",
                Values::Double(
                    runs.iter()
                        .map(|r| {
                            r.posterior_predictive
                                .as_ref()
                                .and_then(|c| finite(c.p_value))
                        })
                        .collect(),
                ),
            ),
            (
                "sampling_s",
                Values::Double(runs.iter().map(|r| finite(r.sampling_s)).collect()),
            ),
        ],
    }
}

/// `fact_safety_event` rows as a table.
pub(super) fn event_table(rows: &[&EventRow]) -> Table {
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
pub(super) fn trip_table(trip_rows: &[&(&(String, String), &Trip, TripCounts)]) -> Table {
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
