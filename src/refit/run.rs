//! The record of one refit, a [`ModelRun`]: what the store keeps per run and what the
//! diagnostics and rare-events pages, the warehouse's `fact_model_run` and `safetel refit --json`
//! read. One typed contract instead of JSON read by key: a renamed field fails to compile, not
//! to show. Stored as JSON; every field has a default, so records written before a field existed
//! still read, and a number the refit could not compute (NaN, stored as `null`) reads back as
//! NaN.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::diagnostics::ParameterSummary;
use super::result::{Diagnostics, PredictiveCheck};

/// One refit: its data, settings, verdict, parameters, diagnostics and timing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelRun {
    #[serde(flatten)]
    pub outline: RunOutline,
    pub window_days: u32,
    /// The sampler's settings.
    pub chains: usize,
    pub warmup: u64,
    pub draws: u64,
    pub seed: u64,
    /// The population parameters (`None`: the run did not report it).
    pub alpha: Option<ParameterSummary>,
    pub mu: Option<ParameterSummary>,
    pub sigma: Option<ParameterSummary>,
    pub diagnostics: Option<Diagnostics>,
    pub posterior_predictive: Option<PredictiveCheck>,
    /// alpha, mu and sigma draws by chain, thinned for trace plots.
    #[serde(deserialize_with = "nan_for_null_traces")]
    pub traces: BTreeMap<String, Vec<Vec<f64>>>,
    #[serde(deserialize_with = "nan_for_null")]
    pub sampling_s: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub total_s: f64,
    /// The warehouse snapshot's trips by stratum, added once the snapshot is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strata: Option<Vec<RunStratum>>,
}

/// Which run, its verdict and the data it was fitted to: what every view of a run shows
/// first (the diagnostics page flattens it as the record does).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOutline {
    /// When the run started (ms since epoch); also its id.
    pub run_id: i64,
    pub converged: bool,
    /// Whether its priors replaced the previous ones (only a converged run's do).
    pub priors_applied: bool,
    /// The data it was fitted to.
    pub vehicles: usize,
    pub intervals: usize,
    pub events: u64,
}

/// Trips, exposure and events of one stratum (road type x weather x night) in the snapshot
/// written with a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunStratum {
    pub road_type: String,
    pub weather: String,
    pub night: bool,
    pub trips: u64,
    #[serde(deserialize_with = "nan_for_null")]
    pub exposure_hours: f64,
    pub critical_events: u64,
    pub disengagements: u64,
}

impl ModelRun {
    /// The summary of a population parameter by the name the pages use.
    pub fn parameter(&self, name: &str) -> Option<&ParameterSummary> {
        match name {
            "alpha" => self.alpha.as_ref(),
            "mu" => self.mu.as_ref(),
            "sigma" => self.sigma.as_ref(),
            _ => None,
        }
    }
}

/// An `f64` stored as JSON, where `null` stands for NaN (serde_json writes NaN so).
pub fn nan_for_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Draws by chain, as [`nan_for_null`] reads one.
fn nan_for_null_traces<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Vec<Vec<f64>>>, D::Error> {
    let traces = BTreeMap::<String, Vec<Vec<Option<f64>>>>::deserialize(deserializer)?;
    Ok(traces
        .into_iter()
        .map(|(name, chains)| {
            let chains = chains
                .into_iter()
                .map(|draws| draws.into_iter().map(|d| d.unwrap_or(f64::NAN)).collect())
                .collect();
            (name, chains)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(mean: f64) -> ParameterSummary {
        ParameterSummary {
            mean,
            sd: 0.1,
            q2_5: mean - 0.2,
            q50: mean,
            q97_5: mean + 0.2,
            ess_bulk: 800.0,
            ess_tail: f64::NAN,
            rhat: 1.001,
            mcse_mean: 0.01,
        }
    }

    #[test]
    fn a_run_reads_back_as_written_with_nan_where_nothing_was_computed() {
        let run = ModelRun {
            outline: RunOutline {
                run_id: 1_700_000_000_000,
                converged: true,
                priors_applied: true,
                vehicles: 3,
                intervals: 40,
                events: 7,
            },
            window_days: 90,
            chains: 2,
            warmup: 100,
            draws: 100,
            seed: 9,
            alpha: Some(summary(1.2)),
            mu: Some(summary(-3.0)),
            sigma: None,
            traces: BTreeMap::from([("alpha".into(), vec![vec![1.0, f64::NAN]])]),
            sampling_s: 1.5,
            total_s: f64::NAN,
            ..ModelRun::default()
        };
        let bytes = serde_json::to_vec(&run).unwrap();
        let back: ModelRun = serde_json::from_slice(&bytes).unwrap();
        assert!(back.total_s.is_nan());
        assert!(back.alpha.unwrap().ess_tail.is_nan());
        assert!(back.traces["alpha"][0][1].is_nan());
        // NaN is not equal to itself: compare what is a number.
        assert_eq!(back.outline, run.outline);
        assert_eq!(back.mu.unwrap().mean, -3.0);
        assert_eq!(back.sigma, None);
        assert_eq!(back.strata, None);
    }

    #[test]
    fn a_record_from_before_a_field_existed_reads_with_its_default() {
        let old = serde_json::json!({"run_id": 5, "converged": false, "vehicles": 2});
        let run: ModelRun = serde_json::from_value(old).unwrap();
        let o = &run.outline;
        assert_eq!((o.run_id, o.converged, o.vehicles), (5, false, 2));
        assert_eq!(run.diagnostics, None);
        assert!(run.traces.is_empty());
        assert_eq!(run.strata, None);
    }
}
