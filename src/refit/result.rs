//! From draws to what the refit reports: parameter summaries with diagnostics, the convergence
//! verdict, a posterior predictive check of per-vehicle event counts, per-vehicle hazard rates
//! with 95% intervals, and the Gamma priors (a0, b0) the stream's detectors use.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use statrs::function::gamma::gamma;

use super::diagnostics::{self, Chain, ParameterSummary};
use super::model::SurvivalData;
use super::sampler::Fit;

/// A run converges when every reported parameter has R-hat below this...
pub const MAX_RHAT: f64 = 1.01;
/// ...bulk ESS above this, and there are no divergences.
pub const MIN_ESS_BULK: f64 = 400.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    pub divergences: u64,
    pub tree_depth_hits: u64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub max_rhat: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub min_ess_bulk: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub min_ess_tail: f64,
    /// The smallest E-BFMI over chains.
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub ebfmi: f64,
    pub converged: bool,
}

/// Replicated per-vehicle event counts against the observed ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictiveCheck {
    /// Draws used.
    pub replications: usize,
    /// P(D(y_rep, theta) >= D(y, theta)) with D = sum over vehicles of (count - mean)^2 / mean:
    /// near 0 or 1 means the model does not reproduce the spread of counts between vehicles.
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub p_value: f64,
    /// Share of vehicles whose observed count lies within its own 95% predictive interval.
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub coverage_95: f64,
    /// How many vehicles had k events, observed and replicated: the check's picture.
    pub count_histogram: Vec<CountBucket>,
}

/// Vehicles with `events` events (the last bucket: at least that many), observed and in the
/// replications (mean and 95% interval over replications).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountBucket {
    pub events: u64,
    pub at_least: bool,
    pub observed: u64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub replicated_mean: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub replicated_low: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub replicated_high: f64,
}

/// Draws kept per chain for trace plots.
pub const TRACE_POINTS: usize = 200;

/// One vehicle's posterior: event rate per exposure hour and the Gamma prior matched to it.
#[derive(Debug, Clone, Serialize)]
pub struct VehicleHazard {
    pub events: u64,
    pub exposure_hours: f64,
    pub rate_per_hour_mean: f64,
    #[serde(rename = "rate_per_hour_q2.5")]
    pub rate_q2_5: f64,
    #[serde(rename = "rate_per_hour_q97.5")]
    pub rate_q97_5: f64,
    pub prior_a0: f64,
    pub prior_b0: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefitResult {
    pub parameters: BTreeMap<String, ParameterSummary>,
    pub diagnostics: Diagnostics,
    pub posterior_predictive: PredictiveCheck,
    pub vehicles: BTreeMap<String, VehicleHazard>,
    pub data: DataSummary,
    /// alpha, mu and sigma draws by chain, thinned to at most [`TRACE_POINTS`] per chain.
    pub traces: BTreeMap<String, Vec<Vec<f64>>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataSummary {
    pub vehicles: usize,
    pub intervals: usize,
    pub events: u64,
}

fn map(chains: &[Chain], f: impl Fn(f64) -> f64) -> Vec<Chain> {
    chains
        .iter()
        .map(|c| c.iter().map(|v| f(*v)).collect())
        .collect()
}

/// lambda_v draws, chain by chain.
fn lambda_chains(fit: &Fit, v: usize) -> Vec<Chain> {
    let (mu, log_sigma, z) = (&fit.draws[1], &fit.draws[2], &fit.draws[3 + v]);
    (0..mu.len())
        .map(|c| {
            (0..mu[c].len())
                .map(|i| (mu[c][i] + log_sigma[c][i].exp() * z[c][i]).exp())
                .collect()
        })
        .collect()
}

/// Summarises a fit. `seed` drives the predictive replications.
pub fn summarise_fit(data: &SurvivalData, fit: &Fit, seed: u64) -> RefitResult {
    let alpha = map(&fit.draws[0], f64::exp);
    let sigma = map(&fit.draws[2], f64::exp);
    let mut parameters = BTreeMap::new();
    parameters.insert("alpha".to_string(), diagnostics::summarise(&alpha));
    parameters.insert("mu".to_string(), diagnostics::summarise(&fit.draws[1]));
    parameters.insert("sigma".to_string(), diagnostics::summarise(&sigma));
    let traces = [("alpha", &alpha), ("mu", &fit.draws[1]), ("sigma", &sigma)]
        .into_iter()
        .map(|(name, chains)| (name.to_string(), thin(chains, TRACE_POINTS)))
        .collect();
    let alpha_flat: Vec<f64> = alpha.iter().flatten().copied().collect();
    // Mean renewal rate of Weibull(alpha, lambda): 1 / (lambda Gamma(1 + 1/alpha)).
    let mean_time_factor: Vec<f64> = alpha_flat.iter().map(|a| gamma(1.0 + 1.0 / a)).collect();
    let totals = data.totals();
    let mut vehicles = BTreeMap::new();
    let mut lambda_flat: Vec<Vec<f64>> = Vec::with_capacity(data.vehicle_count());
    for (v, id) in data.vehicles.iter().enumerate() {
        let lambda = lambda_chains(fit, v);
        parameters.insert(format!("lambda[{id}]"), diagnostics::summarise(&lambda));
        let flat: Vec<f64> = lambda.into_iter().flatten().collect();
        let mut rates: Vec<f64> = flat
            .iter()
            .zip(&mean_time_factor)
            .map(|(l, g)| 1.0 / (l * g))
            .collect();
        let n = rates.len() as f64;
        let mean = rates.iter().sum::<f64>() / n;
        let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
        rates.sort_by(f64::total_cmp);
        vehicles.insert(
            id.clone(),
            VehicleHazard {
                events: totals[v].1,
                exposure_hours: totals[v].0,
                rate_per_hour_mean: mean,
                rate_q2_5: diagnostics::quantile_sorted(&rates, 0.025),
                rate_q97_5: diagnostics::quantile_sorted(&rates, 0.975),
                prior_a0: mean * mean / var,
                prior_b0: mean / var,
            },
        );
        lambda_flat.push(flat);
    }
    let max_rhat = parameters.values().map(|s| s.rhat).fold(0.0, f64::max);
    let min_ess_bulk = parameters
        .values()
        .map(|s| s.ess_bulk)
        .fold(f64::INFINITY, f64::min);
    let min_ess_tail = parameters
        .values()
        .map(|s| s.ess_tail)
        .fold(f64::INFINITY, f64::min);
    let ebfmi = fit
        .energy
        .iter()
        .map(|e| diagnostics::ebfmi(e))
        .fold(f64::INFINITY, f64::min);
    let diagnostics = Diagnostics {
        divergences: fit.divergences,
        tree_depth_hits: fit.max_depth_hits,
        max_rhat,
        min_ess_bulk,
        min_ess_tail,
        ebfmi,
        converged: max_rhat < MAX_RHAT && min_ess_bulk > MIN_ESS_BULK && fit.divergences == 0,
    };
    let posterior_predictive = predictive_check(&totals, &alpha_flat, &lambda_flat, seed);
    RefitResult {
        parameters,
        diagnostics,
        posterior_predictive,
        vehicles,
        data: DataSummary {
            vehicles: data.vehicle_count(),
            intervals: data.interval_count(),
            events: totals.iter().map(|t| t.1).sum(),
        },
        traces,
    }
}

/// Every chain cut to at most `points` evenly spaced draws.
fn thin(chains: &[Chain], points: usize) -> Vec<Vec<f64>> {
    chains
        .iter()
        .map(|chain| {
            let step = chain.len().div_ceil(points).max(1);
            chain.iter().step_by(step).copied().collect()
        })
        .collect()
}

/// Events of a Weibull(alpha, lambda) renewal process within `exposure` hours.
fn renewals(rng: &mut StdRng, alpha: f64, lambda: f64, exposure: f64) -> u64 {
    let (mut clock, mut count) = (0.0, 0);
    loop {
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        clock += lambda * (-u.ln()).powf(1.0 / alpha);
        if clock > exposure {
            return count;
        }
        count += 1;
    }
}

fn predictive_check(
    totals: &[(f64, u64)],
    alpha: &[f64],
    lambda: &[Vec<f64>],
    seed: u64,
) -> PredictiveCheck {
    let draws = alpha.len();
    let replications = draws.min(200);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_cafe);
    let mut exceed = 0usize;
    let mut replicated: Vec<Vec<u64>> = vec![Vec::with_capacity(replications); totals.len()];
    for r in 0..replications {
        let i = r * draws / replications;
        let (mut d_obs, mut d_rep) = (0.0, 0.0);
        for (v, &(exposure, observed)) in totals.iter().enumerate() {
            let (a, l) = (alpha[i], lambda[v][i]);
            let expected = (exposure / (l * gamma(1.0 + 1.0 / a))).max(1e-9);
            let rep = renewals(&mut rng, a, l, exposure);
            replicated[v].push(rep);
            d_obs += (observed as f64 - expected).powi(2) / expected;
            d_rep += (rep as f64 - expected).powi(2) / expected;
        }
        exceed += usize::from(d_rep >= d_obs);
    }
    let count_histogram = count_histogram(totals, &replicated, replications);
    for reps in replicated.iter_mut() {
        reps.sort_unstable();
    }
    let covered = totals
        .iter()
        .zip(&replicated)
        .filter(|((_, observed), reps)| {
            let at = |q: f64| reps[((reps.len() - 1) as f64 * q).round() as usize];
            (at(0.025)..=at(0.975)).contains(observed)
        })
        .count();
    PredictiveCheck {
        replications,
        p_value: exceed as f64 / replications as f64,
        coverage_95: covered as f64 / totals.len() as f64,
        count_histogram,
    }
}

/// Buckets of per-vehicle event counts, 0 up to the largest observed (at most 20, the last
/// bucket taking the rest); `replicated[v][r]` is vehicle v's count in replication r.
fn count_histogram(
    totals: &[(f64, u64)],
    replicated: &[Vec<u64>],
    replications: usize,
) -> Vec<CountBucket> {
    let last = totals.iter().map(|t| t.1).max().unwrap_or(0).min(20);
    let bucket = |count: u64| count.min(last) as usize;
    let mut observed = vec![0u64; last as usize + 1];
    for (_, count) in totals {
        observed[bucket(*count)] += 1;
    }
    // per_replication[k][r]: vehicles in bucket k in replication r.
    let mut per_replication = vec![vec![0f64; replications]; last as usize + 1];
    for reps in replicated {
        for (r, count) in reps.iter().enumerate() {
            per_replication[bucket(*count)][r] += 1.0;
        }
    }
    per_replication
        .into_iter()
        .zip(observed)
        .enumerate()
        .map(|(k, (mut reps, observed))| {
            let mean = reps.iter().sum::<f64>() / reps.len().max(1) as f64;
            reps.sort_by(f64::total_cmp);
            let at = |q: f64| {
                reps.get(((reps.len().max(1) - 1) as f64 * q).round() as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            CountBucket {
                events: k as u64,
                at_least: k as u64 == last && last > 0,
                observed,
                replicated_mean: mean,
                replicated_low: at(0.025),
                replicated_high: at(0.975),
            }
        })
        .collect()
}

/// Data simulated from the model: `vehicles` vehicles, each observed for `exposure_hours`,
/// intervals between events as a Weibull renewal process, the open one censored.
pub fn simulate(
    vehicles: usize,
    exposure_hours: f64,
    alpha: f64,
    mu: f64,
    sigma: f64,
    seed: u64,
) -> Vec<(String, f64, bool)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = rand_distr::StandardNormal;
    let mut rows = Vec::new();
    for v in 0..vehicles {
        let z: f64 = rand_distr::Distribution::sample(&normal, &mut rng);
        let lambda = (mu + sigma * z).exp();
        let id = format!("veh-{v:05}");
        let mut clock = 0.0;
        loop {
            let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let t = lambda * (-u.ln()).powf(1.0 / alpha);
            if clock + t > exposure_hours {
                rows.push((id.clone(), (exposure_hours - clock).max(1e-6), false));
                break;
            }
            rows.push((id.clone(), t, true));
            clock += t;
        }
    }
    rows
}
