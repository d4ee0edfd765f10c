//! The dashboard: five pages and the JSON behind each, built from the engine's live state, the
//! alerts and the last refit. Pure: the HTTP edge gathers [`Sources`] and serves what these
//! functions return; each page renders only from its own JSON, so page and API agree.
//!
//! | page | path | JSON |
//! |---|---|---|
//! | executive summary | `/` | `/api/summary` |
//! | regression analysis | `/regressions`, `/regressions/episode?id=` | `/api/regressions`, `/api/regressions/episode?id=` |
//! | rare event detection | `/rare-events` | `/api/rare-events` |
//! | vehicle performance | `/vehicles?q=` | `/api/vehicle-ranking?q=` |
//! | model diagnostics | `/diagnostics` | `/api/diagnostics` |

pub mod diagnostics;
pub mod html;
pub mod rare_events;
pub mod regressions;
pub mod summary;
pub mod svg;
pub mod vehicles;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::engine::detection::{DetectionSettings, Series};
use crate::engine::{BinStats, Vehicles};
use crate::generator::GroundTruth;
use crate::model::RegressionAlert;

/// What the pages read.
pub struct Sources<'a> {
    pub vehicles: &'a Vehicles,
    /// Cohort key -> one series per hazard class.
    pub cohorts: &'a BTreeMap<String, Vec<Series>>,
    /// Each source partition's fleet sums as of the last commit point.
    pub fleet: &'a std::collections::HashMap<i32, crate::engine::PartitionView>,
    pub settings: &'a DetectionSettings,
    /// Every alert published, in any order.
    pub alerts: &'a [RegressionAlert],
    /// The last refit's model run as the store records it.
    pub model_run: Option<&'a Value>,
    /// The review policy and budget, when critical events are reviewed under a budget.
    pub sampling: Option<(&'a str, f64)>,
    /// The injected regressions, where the stream is a simulation that knows them.
    pub truth: Option<&'a GroundTruth>,
    /// A regression counts as detected when an alert opened within this many days of onset.
    pub horizon_days: f64,
}

/// Days per period of the pages' time charts.
pub const PERIOD_DAYS: i64 = 7;

/// The fleet's bins summed over vehicles and over periods of [`PERIOD_DAYS`], by period start.
pub fn fleet_periods(vehicles: &Vehicles) -> BTreeMap<i64, BinStats> {
    let period_ms = PERIOD_DAYS * 86_400_000;
    let mut periods: BTreeMap<i64, BinStats> = BTreeMap::new();
    for vehicle in vehicles.iter() {
        for (start, stats) in &vehicle.bins {
            periods
                .entry(start.div_euclid(period_ms) * period_ms)
                .or_default()
                .add(stats);
        }
    }
    periods
}

/// The critical-event count of `stats` as the fleet knows it: the Horvitz-Thompson estimate
/// and its variance under a review budget, the observed count (`None`: a Poisson count)
/// otherwise.
pub fn critical_estimate(stats: &BinStats, sampled: bool) -> (f64, Option<f64>) {
    if sampled {
        let (estimate, variance) = stats.ht_critical();
        (estimate, Some(variance))
    } else {
        (stats.critical as f64, None)
    }
}

/// Events per 1000 exposure hours with a 95% interval: normal on the estimate's variance
/// (Horvitz-Thompson), or for an observed count k the exact Poisson (Garwood) interval,
/// Gamma(k, 1) at 2.5% to Gamma(k + 1, 1) at 97.5%.
pub fn rate_json(estimate: f64, variance: Option<f64>, hours: f64) -> Value {
    let per_1000h = |events: f64| (hours > 0.0).then(|| events / hours * 1000.0);
    let (se, low, high) = match variance {
        Some(variance) => {
            let se = variance.sqrt();
            (se, (estimate - 1.96 * se).max(0.0), estimate + 1.96 * se)
        }
        None => {
            let quantile = |shape: f64, q: f64| {
                crate::detect::hazard_ratio::GammaRate { shape, rate: 1.0 }
                    .quantile(q)
                    .unwrap_or(0.0)
            };
            let low = if estimate > 0.0 {
                quantile(estimate, 0.025)
            } else {
                0.0
            };
            (estimate.sqrt(), low, quantile(estimate + 1.0, 0.975))
        }
    };
    serde_json::json!({
        "estimate": estimate,
        "standard_error": se,
        "rate_per_1000h": per_1000h(estimate),
        "rate_per_1000h_ci95": [per_1000h(low), per_1000h(high)],
    })
}

#[cfg(test)]
mod tests;
