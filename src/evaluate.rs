//! Scoring alerts against the generator's ground truth: sensitivity, false alarms, precision and
//! time to detection, with bootstrap 95% intervals. Pure: `safetel evaluate` and `demo` do the IO.
//!
//! Matching. An injected regression (key, hazard class, true onset) is detected when an OPENED
//! alert for the same key kind, key and class was raised at or after the onset; it counts
//! towards sensitivity when that happened within the horizon, and its time to detection is
//! `detected_at - onset`. An OPENED alert is true when it detects an injected regression, or
//! when its vehicle is a member of an injected cohort regression of that class and it came after
//! the onset (the vehicle's hazard did rise); every other OPENED alert is a false alarm.
//! False alarms are per 1000 vehicle-months of the generated fleet (a month is 30.4375 days).
//!
//! Intervals: percentile bootstrap, 2000 resamples, seeded. Sensitivity and MTTD resample the
//! injected regressions; precision resamples the OPENED alerts; the false-alarm rate resamples
//! vehicles (each with its own false alarms), cohort false alarms added unchanged.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::generator::{GroundTruth, InjectedRegression};
use crate::model::{AlertStatus, KeyKind, RegressionAlert};

const DAY_MS: f64 = 86_400_000.0;
const DAYS_PER_MONTH: f64 = 30.4375;
const RESAMPLES: usize = 2000;
const SEED: u64 = 20_261_126;

/// A point estimate with its 95% interval; `None` where there is nothing to estimate from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// One injected regression and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub key_kind: String,
    pub key: String,
    pub hazard_class: String,
    pub true_hr: f64,
    pub onset_ms: i64,
    /// First OPENED alert at or after the onset, if any.
    pub detected_at: Option<i64>,
    pub time_to_detection_days: Option<f64>,
    /// Detected within the horizon.
    pub detected: bool,
}

/// Sensitivity and MTTD of a group of regressions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupScore {
    pub regressions: usize,
    pub detected: usize,
    pub sensitivity: Option<f64>,
    pub mttd_days_median: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub horizon_days: f64,
    pub regressions: usize,
    pub detected: usize,
    pub sensitivity: Option<f64>,
    pub sensitivity_ci: [Option<f64>; 2],
    pub alerts_opened: usize,
    pub true_alerts: usize,
    pub false_alarms: usize,
    pub vehicle_months: f64,
    pub false_alarms_per_1000_vehicle_months: Option<f64>,
    pub false_alarms_per_1000_vehicle_months_ci: [Option<f64>; 2],
    pub precision: Option<f64>,
    pub precision_ci: [Option<f64>; 2],
    pub mttd_days_mean: Option<f64>,
    pub mttd_days_mean_ci: [Option<f64>; 2],
    pub mttd_days_median: Option<f64>,
    pub mttd_days_median_ci: [Option<f64>; 2],
    /// By key kind (`VEHICLE`, `COHORT`) and by true HR band.
    pub by_key_kind: BTreeMap<String, GroupScore>,
    pub by_hr_band: BTreeMap<String, GroupScore>,
    pub outcomes: Vec<Outcome>,
    /// OPENED alerts counted as false alarms, by alert id.
    pub false_alarm_ids: Vec<String>,
}

fn matches(r: &InjectedRegression, a: &RegressionAlert) -> bool {
    r.key_kind == a.key_kind.name()
        && r.key == a.key
        && r.hazard_class == a.hazard_class
        && a.detected_at >= r.onset_ms
}

fn explained_by_cohort(truth: &GroundTruth, a: &RegressionAlert) -> bool {
    a.key_kind == KeyKind::Vehicle
        && truth.regressions.iter().any(|r| {
            r.hazard_class == a.hazard_class
                && a.detected_at >= r.onset_ms
                && r.members.contains(&a.key)
        })
}

fn hr_band(hr: f64) -> &'static str {
    if hr < 2.0 {
        "hr<2"
    } else if hr < 3.0 {
        "2<=hr<3"
    } else {
        "hr>=3"
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Percentile bootstrap of `statistic` over `units`.
fn bootstrap<T>(
    units: &[T],
    rng: &mut StdRng,
    statistic: impl Fn(&[&T]) -> Option<f64>,
) -> [Option<f64>; 2] {
    if units.is_empty() {
        return [None, None];
    }
    let mut values: Vec<f64> = (0..RESAMPLES)
        .filter_map(|_| {
            let sample: Vec<&T> = (0..units.len())
                .map(|_| &units[rng.random_range(0..units.len())])
                .collect();
            statistic(&sample)
        })
        .collect();
    if values.is_empty() {
        return [None, None];
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * (values.len() - 1) as f64).round()) as usize];
    [Some(at(0.025)), Some(at(0.975))]
}

fn group(outcomes: &[&Outcome]) -> GroupScore {
    let detected = outcomes.iter().filter(|o| o.detected).count();
    let times: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.detected)
        .filter_map(|o| o.time_to_detection_days)
        .collect();
    GroupScore {
        regressions: outcomes.len(),
        detected,
        sensitivity: (!outcomes.is_empty()).then(|| detected as f64 / outcomes.len() as f64),
        mttd_days_median: median(&times),
    }
}

/// The detection horizon the CLI and the dashboard use unless told otherwise.
pub const DEFAULT_HORIZON_DAYS: f64 = 30.0;

/// Scores `alerts` against `truth` with a detection horizon of `horizon_days`.
pub fn evaluate(truth: &GroundTruth, alerts: &[RegressionAlert], horizon_days: f64) -> Evaluation {
    let horizon_ms = (horizon_days * DAY_MS) as i64;
    let opened: Vec<&RegressionAlert> = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Opened)
        .collect();
    let outcomes: Vec<Outcome> = truth
        .regressions
        .iter()
        .map(|r| {
            let first = opened
                .iter()
                .filter(|a| matches(r, a))
                .map(|a| a.detected_at)
                .min();
            let ttd = first.map(|t| (t - r.onset_ms) as f64 / DAY_MS);
            Outcome {
                key_kind: r.key_kind.clone(),
                key: r.key.clone(),
                hazard_class: r.hazard_class.name().to_string(),
                true_hr: r.true_hr,
                onset_ms: r.onset_ms,
                detected_at: first,
                time_to_detection_days: ttd,
                detected: first.is_some_and(|t| t - r.onset_ms <= horizon_ms),
            }
        })
        .collect();
    let is_true = |a: &RegressionAlert| {
        truth.regressions.iter().any(|r| matches(r, a)) || explained_by_cohort(truth, a)
    };
    let truths: Vec<bool> = opened.iter().map(|a| is_true(a)).collect();
    let false_alarm_ids: Vec<String> = opened
        .iter()
        .zip(&truths)
        .filter(|(_, t)| !**t)
        .map(|(a, _)| a.alert_id.clone())
        .collect();
    let false_alarms = false_alarm_ids.len();
    let vehicle_months = truth.vehicles as f64 * f64::from(truth.days) / DAYS_PER_MONTH;
    let per_1000 = |count: f64| (vehicle_months > 0.0).then(|| count / vehicle_months * 1000.0);

    let mut rng = StdRng::seed_from_u64(SEED);
    let detected = outcomes.iter().filter(|o| o.detected).count();
    let sensitivity = |sample: &[&Outcome]| {
        Some(sample.iter().filter(|o| o.detected).count() as f64 / sample.len() as f64)
    };
    let times = |sample: &[&Outcome]| -> Vec<f64> {
        sample
            .iter()
            .filter(|o| o.detected)
            .filter_map(|o| o.time_to_detection_days)
            .collect()
    };
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let sensitivity_ci = bootstrap(&outcomes, &mut rng, sensitivity);
    let mttd_days_mean_ci = bootstrap(&outcomes, &mut rng, |s| mean(&times(s)));
    let mttd_days_median_ci = bootstrap(&outcomes, &mut rng, |s| median(&times(s)));
    let precision_ci = bootstrap(&truths, &mut rng, |s| {
        Some(s.iter().filter(|t| ***t).count() as f64 / s.len() as f64)
    });
    // False alarms per vehicle (vehicle ids 0..n as generated), cohort ones on top.
    let mut per_vehicle: BTreeMap<&str, usize> = BTreeMap::new();
    let mut cohort_false = 0usize;
    for (a, t) in opened.iter().zip(&truths) {
        if *t {
            continue;
        }
        match a.key_kind {
            KeyKind::Vehicle => *per_vehicle.entry(a.key.as_str()).or_default() += 1,
            KeyKind::Cohort => cohort_false += 1,
        }
    }
    let mut counts: Vec<usize> = per_vehicle.values().copied().collect();
    counts.resize(truth.vehicles.max(counts.len()), 0);
    let false_alarm_ci = bootstrap(&counts, &mut rng, |s| {
        per_1000((s.iter().map(|c| **c).sum::<usize>() + cohort_false) as f64)
    });

    let mut by_key_kind = BTreeMap::new();
    let mut by_hr_band = BTreeMap::new();
    for kind in ["VEHICLE", "COHORT"] {
        let members: Vec<&Outcome> = all.iter().copied().filter(|o| o.key_kind == kind).collect();
        by_key_kind.insert(kind.to_string(), group(&members));
    }
    for band in ["hr<2", "2<=hr<3", "hr>=3"] {
        let members: Vec<&Outcome> = all
            .iter()
            .copied()
            .filter(|o| hr_band(o.true_hr) == band)
            .collect();
        by_hr_band.insert(band.to_string(), group(&members));
    }
    let detected_times = times(&all);
    Evaluation {
        horizon_days,
        regressions: outcomes.len(),
        detected,
        sensitivity: (!outcomes.is_empty()).then(|| detected as f64 / outcomes.len() as f64),
        sensitivity_ci,
        alerts_opened: opened.len(),
        true_alerts: opened.len() - false_alarms,
        false_alarms,
        vehicle_months,
        false_alarms_per_1000_vehicle_months: per_1000(false_alarms as f64),
        false_alarms_per_1000_vehicle_months_ci: false_alarm_ci,
        precision: (!opened.is_empty())
            .then(|| (opened.len() - false_alarms) as f64 / opened.len() as f64),
        precision_ci,
        mttd_days_mean: mean(&detected_times),
        mttd_days_mean_ci,
        mttd_days_median: median(&detected_times),
        mttd_days_median_ci,
        by_key_kind,
        by_hr_band,
        outcomes,
        false_alarm_ids,
    }
}

impl Evaluation {
    /// A few lines for people.
    pub fn render(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0));
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let ci = |c: [Option<f64>; 2], f: &dyn Fn(Option<f64>) -> String| {
            format!("[{}, {}]", f(c[0]), f(c[1]))
        };
        let mut out = String::new();
        out += &format!(
            "sensitivity (detected within {} days): {}/{} = {} {}\n",
            self.horizon_days,
            self.detected,
            self.regressions,
            pct(self.sensitivity),
            ci(self.sensitivity_ci, &pct)
        );
        for (name, g) in self.by_key_kind.iter().chain(&self.by_hr_band) {
            if g.regressions > 0 {
                out += &format!(
                    "  {name:<8} {}/{} = {}   median time to detection {} days\n",
                    g.detected,
                    g.regressions,
                    pct(g.sensitivity),
                    num(g.mttd_days_median)
                );
            }
        }
        out += &format!(
            "false alarms: {} in {:.0} vehicle-months = {} per 1000 vehicle-months {}\n",
            self.false_alarms,
            self.vehicle_months,
            num(self.false_alarms_per_1000_vehicle_months),
            ci(self.false_alarms_per_1000_vehicle_months_ci, &num)
        );
        out += &format!(
            "precision: {}/{} OPENED alerts = {} {}\n",
            self.true_alerts,
            self.alerts_opened,
            pct(self.precision),
            ci(self.precision_ci, &pct)
        );
        out += &format!(
            "MTTD from the true onset: mean {} {} days, median {} {} days\n",
            num(self.mttd_days_mean),
            ci(self.mttd_days_mean_ci, &num),
            num(self.mttd_days_median),
            ci(self.mttd_days_median_ci, &num)
        );
        out
    }
}

#[cfg(test)]
mod tests;
