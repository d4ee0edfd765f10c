//! MCMC convergence diagnostics (Vehtari, Gelman, Simpson, Carpenter, Bürkner 2021): split and
//! rank-normalised R-hat, bulk and tail effective sample size, Monte Carlo standard error, and
//! E-BFMI. Pure functions of the draws; each chain is a slice of draws in order.
//!
//! Conventions follow the established implementations so that numbers agree with them: chains
//! are split in halves (the middle draw of an odd chain is dropped), ranks of ties are averaged
//! and mapped to normal scores by (r - 3/8) / (S + 1/4), autocovariances are the biased ones
//! (divided by n), and the autocorrelation sum is truncated by Geyer's initial positive and
//! monotone sequences.

use statrs::distribution::{ContinuousCDF, Normal};

/// One chain's draws, in order.
pub type Chain = Vec<f64>;

/// Each chain cut in two halves: 2m chains of n/2 draws.
pub fn split_chains(chains: &[Chain]) -> Vec<Chain> {
    let mut out = Vec::with_capacity(chains.len() * 2);
    for chain in chains {
        let half = chain.len() / 2;
        out.push(chain[..half].to_vec());
        out.push(chain[chain.len() - half..].to_vec());
    }
    out
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample variance (n - 1 in the denominator).
fn variance(values: &[f64]) -> f64 {
    let m = mean(values);
    values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len() as f64 - 1.0)
}

/// The potential scale reduction of chains as given (no splitting or ranking).
pub fn rhat_basic(chains: &[Chain]) -> f64 {
    let n = chains[0].len() as f64;
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let between = n * variance(&means);
    let within = mean(&chains.iter().map(|c| variance(c)).collect::<Vec<_>>());
    ((between / within + n - 1.0) / n).sqrt()
}

/// Ranks (1-based, ties averaged) mapped to normal scores, keeping the chains' shape.
pub fn rank_normalise(chains: &[Chain]) -> Vec<Chain> {
    let all: Vec<f64> = chains.iter().flatten().copied().collect();
    let size = all.len();
    let mut order: Vec<usize> = (0..size).collect();
    order.sort_by(|a, b| all[*a].total_cmp(&all[*b]));
    let mut ranks = vec![0.0; size];
    let mut i = 0;
    while i < size {
        let mut j = i;
        while j + 1 < size && all[order[j + 1]] == all[order[i]] {
            j += 1;
        }
        let average = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = average;
        }
        i = j + 1;
    }
    let normal = Normal::standard();
    let mut scores = ranks
        .into_iter()
        .map(|r| normal.inverse_cdf((r - 0.375) / (size as f64 + 0.25)));
    chains
        .iter()
        .map(|c| scores.by_ref().take(c.len()).collect())
        .collect()
}

/// Rank-normalised split R-hat: the larger of the bulk one and the one of the folded draws.
pub fn rhat(chains: &[Chain]) -> f64 {
    let bulk = rhat_basic(&rank_normalise(&split_chains(chains)));
    let median = quantile(chains, 0.5);
    let folded: Vec<Chain> = chains
        .iter()
        .map(|c| c.iter().map(|v| (v - median).abs()).collect())
        .collect();
    let tail = rhat_basic(&rank_normalise(&split_chains(&folded)));
    bulk.max(tail)
}

/// Classic split R-hat on the draws themselves.
pub fn rhat_split(chains: &[Chain]) -> f64 {
    rhat_basic(&split_chains(chains))
}

/// Biased autocovariance of one chain at `lag`.
fn autocovariance(chain: &[f64], chain_mean: f64, lag: usize) -> f64 {
    let n = chain.len();
    (0..n - lag)
        .map(|k| (chain[k] - chain_mean) * (chain[k + lag] - chain_mean))
        .sum::<f64>()
        / n as f64
}

/// Effective sample size of chains as given, by Geyer's initial monotone sequence. Constant
/// draws give NaN.
pub fn ess_basic(chains: &[Chain]) -> f64 {
    let m = chains.len();
    let n = chains[0].len();
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    // Mean over chains of the autocovariance at a lag, computed as the truncation asks for it.
    let mut cache: Vec<f64> = Vec::new();
    let mut acov = |lag: usize| -> f64 {
        while cache.len() <= lag {
            let t = cache.len();
            let sum: f64 = chains
                .iter()
                .zip(&means)
                .map(|(c, m)| autocovariance(c, *m, t))
                .sum();
            cache.push(sum / m as f64);
        }
        cache[lag]
    };
    let nf = n as f64;
    let mean_var = acov(0) * nf / (nf - 1.0);
    let mut var_plus = mean_var * (nf - 1.0) / nf;
    if m > 1 {
        var_plus += variance(&means);
    }
    let mut rho = vec![0.0; n];
    rho[0] = 1.0;
    let mut rho_even = 1.0;
    let mut rho_odd = 1.0 - (mean_var - acov(1)) / var_plus;
    rho[1] = rho_odd;
    // Initial positive sequence: sums of adjacent pairs while positive.
    let mut t = 1;
    while t + 3 < n && rho_even + rho_odd > 0.0 {
        rho_even = 1.0 - (mean_var - acov(t + 1)) / var_plus;
        rho_odd = 1.0 - (mean_var - acov(t + 2)) / var_plus;
        if rho_even + rho_odd >= 0.0 {
            rho[t + 1] = rho_even;
            rho[t + 2] = rho_odd;
        }
        t += 2;
    }
    let max_t = t - 2;
    if rho_even > 0.0 {
        rho[max_t + 1] = rho_even;
    }
    // Initial monotone sequence: pairs may not grow.
    let mut t = 1;
    while t + 2 <= max_t {
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t] {
            rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0;
            rho[t + 2] = rho[t + 1];
        }
        t += 2;
    }
    let draws = (m * n) as f64;
    let tau = -1.0 + 2.0 * rho[..=max_t].iter().sum::<f64>() + rho[max_t + 1];
    let tau = tau.max(1.0 / draws.log10());
    draws / tau
}

/// Bulk ESS: of the rank-normalised split chains.
pub fn ess_bulk(chains: &[Chain]) -> f64 {
    ess_basic(&rank_normalise(&split_chains(chains)))
}

/// Tail ESS: the smaller ESS of the indicators of the 5% and 95% quantiles.
pub fn ess_tail(chains: &[Chain]) -> f64 {
    let indicator = |q: f64| -> Vec<Chain> {
        let cut = quantile(chains, q);
        chains
            .iter()
            .map(|c| c.iter().map(|v| f64::from(u8::from(*v <= cut))).collect())
            .collect()
    };
    let low = ess_basic(&split_chains(&indicator(0.05)));
    let high = ess_basic(&split_chains(&indicator(0.95)));
    low.min(high)
}

/// Monte Carlo standard error of the mean.
pub fn mcse_mean(chains: &[Chain]) -> f64 {
    let all: Vec<f64> = chains.iter().flatten().copied().collect();
    variance(&all).sqrt() / ess_basic(&split_chains(chains)).sqrt()
}

/// The q-quantile of all draws, interpolating linearly between order statistics.
pub fn quantile(chains: &[Chain], q: f64) -> f64 {
    let mut all: Vec<f64> = chains.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    quantile_sorted(&all, q)
}

pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// E-BFMI of one chain's Hamiltonian energies: mean squared change over the variance. Below
/// 0.3 the momentum resampling explores the energy distribution poorly.
pub fn ebfmi(energy: &[f64]) -> f64 {
    let n = energy.len() as f64;
    let m = mean(energy);
    let variance = energy.iter().map(|e| (e - m) * (e - m)).sum::<f64>() / n;
    let steps = energy
        .windows(2)
        .map(|w| (w[1] - w[0]).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    steps / variance
}

/// What the result reports per parameter.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ParameterSummary {
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub mean: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub sd: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    #[serde(rename = "q2.5")]
    pub q2_5: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub q50: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    #[serde(rename = "q97.5")]
    pub q97_5: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub ess_bulk: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub ess_tail: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub rhat: f64,
    #[serde(deserialize_with = "super::run::nan_for_null")]
    pub mcse_mean: f64,
}

pub fn summarise(chains: &[Chain]) -> ParameterSummary {
    let mut all: Vec<f64> = chains.iter().flatten().copied().collect();
    let mean = self::mean(&all);
    let sd = variance(&all).sqrt();
    all.sort_by(f64::total_cmp);
    ParameterSummary {
        mean,
        sd,
        q2_5: quantile_sorted(&all, 0.025),
        q50: quantile_sorted(&all, 0.5),
        q97_5: quantile_sorted(&all, 0.975),
        ess_bulk: ess_bulk(chains),
        ess_tail: ess_tail(chains),
        rhat: rhat(chains),
        mcse_mean: mcse_mean(chains),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden draws (4 chains x 1000 per parameter) and what arviz computes for them.
    fn golden() -> (Vec<(String, Vec<Chain>)>, serde_json::Value) {
        let text = include_str!("../../tests/fixtures/diagnostics/draws.csv");
        let mut params: Vec<(String, Vec<Chain>)> = Vec::new();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            let (name, chain, value) = (
                fields[0],
                fields[1].parse::<usize>().unwrap(),
                fields[3].parse::<f64>().unwrap(),
            );
            if params.last().is_none_or(|(n, _)| n != name) {
                params.push((name.to_string(), Vec::new()));
            }
            let chains = &mut params.last_mut().unwrap().1;
            if chains.len() <= chain {
                chains.resize(chain + 1, Vec::new());
            }
            chains[chain].push(value);
        }
        let expected = serde_json::from_str(include_str!(
            "../../tests/fixtures/diagnostics/expected.json"
        ))
        .unwrap();
        (params, expected)
    }

    #[test]
    fn diagnostics_match_arviz_on_the_golden_draws() {
        // The tolerances: R-hat within 1e-3, ESS within 1%; MCSE within 1% too.
        let (params, expected) = golden();
        assert_eq!(params.len(), 7);
        for (name, chains) in &params {
            let e = &expected["params"][name.as_str()];
            let check = |what: &str, ours: f64, tolerance_relative: bool, tol: f64| {
                let theirs = e[what].as_f64().unwrap();
                let off = if tolerance_relative {
                    (ours / theirs - 1.0).abs()
                } else {
                    (ours - theirs).abs()
                };
                assert!(off <= tol, "{name} {what}: ours {ours}, arviz {theirs}");
            };
            assert_eq!(chains.len(), 4);
            check("rhat_rank", rhat(chains), false, 1e-3);
            check("rhat_split", rhat_split(chains), false, 1e-3);
            check("ess_bulk", ess_bulk(chains), true, 0.01);
            check("ess_tail", ess_tail(chains), true, 0.01);
            check("mcse_mean", mcse_mean(chains), true, 0.01);
            check("mean", summarise(chains).mean, false, 1e-12);
        }
    }

    #[test]
    fn ebfmi_is_high_for_independent_energies_and_low_for_a_random_walk() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let iid: Vec<f64> = (0..4000).map(|_| StandardNormal.sample(&mut rng)).collect();
        // Independent draws: E[(e_n - e_{n-1})^2] = 2 var, so E-BFMI ~ 2 (within 0.15 at n = 4000).
        assert!((ebfmi(&iid) - 2.0).abs() < 0.15, "{}", ebfmi(&iid));
        let mut walk = vec![0.0];
        for step in &iid[1..] {
            walk.push(walk.last().unwrap() + 0.05 * step);
        }
        assert!(ebfmi(&walk) < 0.3, "{}", ebfmi(&walk));
    }
}
