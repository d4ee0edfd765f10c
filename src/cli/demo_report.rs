//! What `safetel demo` reports: one [`DemoReport`], a value that serialises as `summary.json`
//! and displays as the console report. Built from the run's outcome by [`DemoReport::of`], with
//! no IO.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::engine::{BinStats, HeldFleet};
use crate::evaluate::Evaluation;
use crate::generator::{DAY_MS, GroundTruth};
use crate::model::{AlertStatus, HazardClass, KeyKind, RegressionAlert, utc_date};
use crate::stream::runner::RunSummary;

/// What one demo run saw, raised and scored. The fields `summary.json` has are serialised; the
/// rest are for the console.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub records: u64,
    pub accepted: u64,
    pub dead_lettered: u64,
    pub dead_lettered_by_reason: BTreeMap<&'static str, u64>,
    /// What the injected faults should have sent to the dead-letter topic, by reason.
    pub expected_dead_letters: BTreeMap<String, u64>,
    pub vehicles: usize,
    pub fleet_totals: BinStats,
    pub elapsed_s: f64,
    pub alerts: usize,
    /// What each injected vehicle fault gave its detector to work with.
    pub vehicle_fault_events: Vec<FaultEvents>,
    #[serde(skip)]
    console: Console,
}

/// The events of an injected vehicle fault's class in the horizon before and after its onset.
#[derive(Debug, Serialize)]
pub struct FaultEvents {
    pub key: String,
    pub hazard_class: HazardClass,
    pub true_hr: f64,
    pub events_before: u64,
    pub exposure_hours_before: f64,
    pub events_after: u64,
    pub exposure_hours_after: f64,
}

/// What only the console report shows.
#[derive(Debug, Default)]
struct Console {
    commits: u64,
    commit_seconds: f64,
    horizon_days: f64,
    /// (critical events per 1000 h, vehicle, totals, the injected fault's HR if any), highest
    /// first.
    highest_rates: Vec<(f64, String, BinStats, Option<f64>)>,
    detector_updates: (u64, u64),
    cohorts: Vec<String>,
    /// Alerts opened, updated and resolved.
    by_status: (usize, usize, usize),
    injected: usize,
    /// Each OPENED alert with what the truth says of it.
    opened: Vec<(RegressionAlert, String)>,
    evaluation: String,
}

/// The run whose report it is.
pub struct DemoRun<'a> {
    pub summary: &'a RunSummary,
    pub elapsed_s: f64,
    pub dead_lettered_by_reason: BTreeMap<&'static str, u64>,
    pub vehicles: &'a HeldFleet,
    /// Where the vehicles' closed bins that left memory are read back from.
    pub history: &'a dyn crate::dashboard::recent::VehicleHistory,
    pub cohorts: Vec<String>,
    /// Vehicle and cohort detector updates.
    pub detector_updates: (u64, u64),
    pub alerts: &'a [RegressionAlert],
    pub truth: &'a GroundTruth,
    pub evaluation: &'a Evaluation,
    pub horizon_days: f64,
}

impl DemoReport {
    pub fn of(run: DemoRun<'_>) -> DemoReport {
        let truth = run.truth;
        let mut fleet_totals = BinStats::default();
        let mut highest_rates = Vec::new();
        run.vehicles.for_each(|id, vehicle| {
            let totals = vehicle.totals();
            fleet_totals.add(&totals);
            let rate = totals.critical as f64 / totals.exposure_hours().max(1e-9) * 1000.0;
            let injected = truth
                .regressions
                .iter()
                .find(|r| r.key == id)
                .map(|r| r.true_hr);
            highest_rates.push((rate, id.to_string(), totals, injected));
        });
        highest_rates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        highest_rates.truncate(5);
        let count = |status| run.alerts.iter().filter(|a| a.status == status).count();
        let opened = run
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Opened)
            .map(|alert| (alert.clone(), verdict(alert, truth)))
            .collect();
        let summary = run.summary;
        DemoReport {
            records: summary.records,
            accepted: summary.accepted,
            dead_lettered: summary.dead_lettered,
            dead_lettered_by_reason: run.dead_lettered_by_reason,
            expected_dead_letters: truth.faults.expected_dlq.clone(),
            vehicles: run.vehicles.len(),
            fleet_totals,
            elapsed_s: run.elapsed_s,
            alerts: run.alerts.len(),
            vehicle_fault_events: fault_events(
                crate::dashboard::FleetVehicles::local(run.vehicles).with_history(run.history),
                truth,
                run.horizon_days,
            ),
            console: Console {
                commits: summary.commits,
                commit_seconds: summary.commit_seconds,
                horizon_days: run.horizon_days,
                highest_rates,
                detector_updates: run.detector_updates,
                cohorts: run.cohorts,
                by_status: (
                    count(AlertStatus::Opened),
                    count(AlertStatus::Updated),
                    count(AlertStatus::Resolved),
                ),
                injected: truth.regressions.len(),
                opened,
                evaluation: run.evaluation.render(),
            },
        }
    }
}

/// What the truth says of an opened alert: the injected regression it found, or a false alarm.
fn verdict(alert: &RegressionAlert, truth: &GroundTruth) -> String {
    let injected = truth.regressions.iter().find(|r| {
        r.key == alert.key && r.hazard_class == alert.hazard_class || r.members.contains(&alert.key)
    });
    match injected {
        Some(r) if alert.detected_at >= r.onset_ms => format!(
            "{} HR {:.1} from {}",
            if r.key == alert.key {
                "injected"
            } else {
                &r.key
            },
            r.true_hr,
            utc_date(r.onset_ms)
        ),
        _ => "false alarm".into(),
    }
}

/// Each injected vehicle fault's events of its class in the horizon before and after onset.
fn fault_events(
    vehicles: crate::dashboard::FleetVehicles<'_>,
    truth: &GroundTruth,
    horizon_days: f64,
) -> Vec<FaultEvents> {
    let window_ms = (horizon_days * DAY_MS as f64) as i64;
    let kind = KeyKind::Vehicle.name();
    let mut events = Vec::new();
    for r in truth.regressions.iter().filter(|r| r.key_kind == kind) {
        let Some(vehicle) = vehicles.get(&r.key).map(|v| v.bins) else {
            continue;
        };
        let sum = |from: i64, to: i64| {
            let mut total = BinStats::default();
            for (_, stats) in vehicle.range(from..to) {
                total.add(stats);
            }
            (total.count(r.hazard_class), total.exposure_hours())
        };
        let (events_before, exposure_hours_before) = sum(r.onset_ms - window_ms, r.onset_ms);
        let (events_after, exposure_hours_after) = sum(r.onset_ms, r.onset_ms + window_ms);
        events.push(FaultEvents {
            key: r.key.clone(),
            hazard_class: r.hazard_class,
            true_hr: r.true_hr,
            events_before,
            exposure_hours_before,
            events_after,
            exposure_hours_after,
        });
    }
    events
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.console;
        writeln!(
            f,
            "safetel demo — {} records in {:.2} s ({:.0} records/s including generation and RocksDB commits)",
            self.records,
            self.elapsed_s,
            self.records as f64 / self.elapsed_s
        )?;
        writeln!(
            f,
            "  accepted {}   dead-lettered {} {:?}   commits {} ({:.2} s)",
            self.accepted,
            self.dead_lettered,
            self.dead_lettered_by_reason,
            c.commits,
            c.commit_seconds
        )?;
        writeln!(
            f,
            "  expected in DLQ from injected faults: {:?}",
            self.expected_dead_letters
        )?;
        let t = &self.fleet_totals;
        writeln!(
            f,
            "  fleet: {} vehicles, {} trips, {:.0} h driven, {} safety events, {} critical ({:.2} per 1000 h), {} disengagements",
            self.vehicles,
            t.trips,
            t.exposure_hours(),
            t.safety_events,
            t.critical,
            t.critical as f64 / t.exposure_hours().max(1e-9) * 1000.0,
            t.disengagements
        )?;
        writeln!(f, "  highest critical-event rates (per 1000 h):")?;
        for (rate, id, totals, injected) in &c.highest_rates {
            let injected = injected.map(|hr| format!("  <- injected fault, HR {hr:.1}"));
            writeln!(
                f,
                "    {id}  {rate:6.2}  ({} events in {:.0} h){}",
                totals.critical,
                totals.exposure_hours(),
                injected.unwrap_or_default()
            )?;
        }
        writeln!(
            f,
            "  change-point series: {} vehicle and {} cohort bin updates ({} cohorts: {})",
            c.detector_updates.0,
            c.detector_updates.1,
            c.cohorts.len(),
            c.cohorts.join(", ")
        )?;
        writeln!(
            f,
            "  alerts: {} opened, {} updated, {} resolved; {} injected regressions",
            c.by_status.0, c.by_status.1, c.by_status.2, c.injected
        )?;
        writeln!(
            f,
            "  {:<24} {:<14} {:<10} {:<10} {:>20} {:>6}  truth",
            "key", "class", "onset est.", "detected", "HR [95% CrI]", "days"
        )?;
        for (alert, verdict) in &c.opened {
            writeln!(
                f,
                "  {:<24} {:<14} {:<10} {:<10} {:>20} {:>6.1}  {verdict}",
                alert.key,
                alert.hazard_class.name(),
                utc_date(alert.onset_estimate),
                utc_date(alert.detected_at),
                format!(
                    "{:.2} [{:.2}, {:.2}]",
                    alert.hr_median, alert.hr_low, alert.hr_high
                ),
                alert.time_to_detection_days(),
            )?;
        }
        if !self.vehicle_fault_events.is_empty() {
            let median_and_max = |of: fn(&FaultEvents) -> u64| {
                let mut counts: Vec<u64> = self.vehicle_fault_events.iter().map(of).collect();
                counts.sort_unstable();
                (counts[counts.len() / 2], counts[counts.len() - 1])
            };
            let (before, before_max) = median_and_max(|e| e.events_before);
            let (after, after_max) = median_and_max(|e| e.events_after);
            writeln!(
                f,
                "  vehicle faults: events of their class in the {} days before / after onset: median {before} / {after} (max {before_max} / {after_max})",
                c.horizon_days
            )?;
        }
        writeln!(f, "  evaluation against the injected truth:")?;
        for line in c.evaluation.lines() {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}
