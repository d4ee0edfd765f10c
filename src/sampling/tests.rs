use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};

use super::*;
use crate::model::{RoadType, Weather};

/// A varied population of trips: every stratum, exposures of 5 min to 3 h, vehicle rates spread
/// tenfold, a few keys under suspicion.
fn population(n: usize, seed: u64) -> Vec<(String, f64, Stratum, f64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let stratum = Stratum {
                road: RoadType::ALL[rng.random_range(0..3)],
                weather: Weather::ALL[rng.random_range(0..4)],
                night: rng.random::<bool>(),
            };
            let exposure = rng.random_range(0.08..3.0);
            let rate = 0.004 * 10f64.powf(rng.random_range(-0.5..0.5));
            let suspicion = if i % 50 == 0 { 0.9 } else { 0.0 };
            (format!("trip-{i}"), exposure, stratum, rate, suspicion)
        })
        .collect()
}

fn covariates(pop: &[(String, f64, Stratum, f64, f64)]) -> Vec<TripCovariates<'_>> {
    pop.iter()
        .map(|(id, e, s, r, p)| TripCovariates {
            trip_id: id,
            exposure_hours: *e,
            stratum: *s,
            vehicle_rate: *r,
            p_regression: *p,
        })
        .collect()
}

#[test]
fn inclusion_probabilities_average_the_budget_and_selection_spends_it() {
    let pop = population(20_000, 1);
    let trips = covariates(&pop);
    for policy in Policy::ALL {
        let budget = if policy == Policy::Full { 1.0 } else { 0.1 };
        let mut p = SamplingPolicy::new(policy, budget, 0.1, 7).unwrap();
        p.calibrate(&trips);
        let probabilities: Vec<f64> = trips.iter().map(|t| p.probability(t)).collect();
        let expected: f64 = probabilities.iter().sum();
        assert!(
            (expected / trips.len() as f64 - budget).abs() < 1e-9,
            "{policy:?}: mean probability {}",
            expected / trips.len() as f64
        );
        assert!(
            probabilities
                .iter()
                .all(|pi| *pi >= 0.1 * budget && *pi <= 1.0)
        );
        // Realised reviews: sum of independent Bernoullis, within 4 sd of the expectation.
        let reviewed = trips
            .iter()
            .zip(&probabilities)
            .filter(|(t, pi)| selected(t.trip_id, 7, **pi))
            .count() as f64;
        let sd: f64 = probabilities
            .iter()
            .map(|pi| pi * (1.0 - pi))
            .sum::<f64>()
            .sqrt();
        assert!(
            (reviewed - expected).abs() <= 4.0 * sd.max(1e-9),
            "{policy:?}: {reviewed} reviewed, {expected} expected (sd {sd})"
        );
    }
}

#[test]
fn at_budget_one_every_policy_reviews_every_trip() {
    let pop = population(2_000, 2);
    let trips = covariates(&pop);
    for policy in Policy::ALL {
        let mut p = SamplingPolicy::new(policy, 1.0, 0.1, 3).unwrap();
        p.calibrate(&trips);
        assert!(trips.iter().all(|t| p.probability(t) == 1.0), "{policy:?}");
        assert!(
            trips
                .iter()
                .all(|t| selected(t.trip_id, 3, p.probability(t)))
        );
    }
}

#[test]
fn policies_put_the_budget_where_they_say() {
    let pop = population(5_000, 4);
    let trips = covariates(&pop);
    let mut stratified = SamplingPolicy::new(Policy::Stratified, 0.05, 0.0, 1).unwrap();
    stratified.calibrate(&trips);
    let (a, b) = (&trips[0], &trips[1]);
    let ratio = stratified.probability(a) / stratified.probability(b);
    let risk_ratio = a.stratum.relative_risk() / b.stratum.relative_risk();
    assert!(
        (ratio / risk_ratio - 1.0).abs() < 1e-12,
        "in proportion to stratum risk"
    );
    let mut importance = SamplingPolicy::new(Policy::Importance, 0.05, 0.0, 1).unwrap();
    let mut adaptive = SamplingPolicy::new(Policy::Adaptive, 0.05, 0.0, 1).unwrap();
    importance.calibrate(&trips);
    adaptive.calibrate(&trips);
    let suspicious = &trips[0]; // p_regression 0.9
    let other = &trips[1];
    let boost = |p: &SamplingPolicy| p.probability(suspicious) / p.probability(other);
    assert!(
        boost(&adaptive) > 1.5 * boost(&importance),
        "adaptive favours suspected keys"
    );
    let uniform = {
        let mut u = SamplingPolicy::new(Policy::Uniform, 0.05, 0.0, 1).unwrap();
        u.calibrate(&trips);
        u
    };
    assert!(
        trips
            .iter()
            .all(|t| (uniform.probability(t) - 0.05).abs() < 1e-12)
    );
}

#[test]
fn selection_is_reproducible_from_trip_id_and_seed() {
    assert_eq!(selected("trip-1", 9, 0.5), selected("trip-1", 9, 0.5));
    let chosen = |seed| {
        (0..1000)
            .filter(|i| selected(&format!("t{i}"), seed, 0.3))
            .count()
    };
    assert_eq!(chosen(9), chosen(9));
    let same = (0..1000)
        .filter(|i| selected(&format!("t{i}"), 9, 0.3) == selected(&format!("t{i}"), 10, 0.3))
        .count();
    assert!(
        same < 800,
        "another seed picks other trips ({same} of 1000 agree)"
    );
    // The draws are uniform: 10 bins of 10,000 draws, each within 5 sd of 1,000.
    let mut bins = [0u32; 10];
    for i in 0..10_000 {
        bins[(uniform_draw(&format!("x{i}"), 1) * 10.0) as usize] += 1;
    }
    assert!(
        bins.iter().all(|b| (*b as f64 - 1000.0).abs() < 5.0 * 30.0),
        "{bins:?}"
    );
}

#[test]
fn horvitz_thompson_totals_are_unbiased_and_their_variance_is_right() {
    // A fixed population with critical events drawn once; 2,000 replications of each policy's
    // selection (seeds 0..2000). The mean estimate must lie within 3 standard errors of the true
    // total (standard error = sd of the estimates / sqrt(2000)), and the mean of the variance
    // estimates within 10% of the estimates' empirical variance.
    let pop = population(4_000, 5);
    let trips = covariates(&pop);
    let mut rng = StdRng::seed_from_u64(11);
    let events: Vec<f64> = trips
        .iter()
        .map(|t| {
            let mean = t.vehicle_rate * t.stratum.relative_risk() * t.exposure_hours * 40.0;
            Poisson::new(mean).unwrap().sample(&mut rng)
        })
        .collect();
    let truth: f64 = events.iter().sum();
    for policy in [
        Policy::Uniform,
        Policy::Stratified,
        Policy::Importance,
        Policy::Adaptive,
    ] {
        let mut p = SamplingPolicy::new(policy, 0.2, 0.1, 0).unwrap();
        p.calibrate(&trips);
        let probabilities: Vec<f64> = trips.iter().map(|t| p.probability(t)).collect();
        let reps = 2000;
        let (mut estimates, mut variances) = (Vec::new(), Vec::new());
        for seed in 0..reps {
            let ht = ht_estimate(
                trips
                    .iter()
                    .zip(&probabilities)
                    .zip(&events)
                    .filter(|((t, pi), _)| selected(t.trip_id, seed, **pi))
                    .map(|((_, pi), y)| (*y, *pi)),
            );
            estimates.push(ht.total);
            variances.push(ht.variance);
        }
        let n = reps as f64;
        let mean = estimates.iter().sum::<f64>() / n;
        let var = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let se = (var / n).sqrt();
        assert!(
            (mean - truth).abs() < 3.0 * se,
            "{policy:?}: mean {mean} vs truth {truth} (se {se})"
        );
        let mean_variance = variances.iter().sum::<f64>() / n;
        assert!(
            (mean_variance / var - 1.0).abs() < 0.1,
            "{policy:?}: variance {mean_variance} vs {var}"
        );
    }
}

#[test]
fn recalibration_keeps_a_drifting_stream_on_budget() {
    // Adaptive, calibrated on a first stretch without suspicion; then a fifth of the keys come
    // under suspicion (P(regression) 0.9), which a fixed scale would pay for on top of B.
    let pop = population(40_000, 3);
    let mut trips = covariates(&pop);
    for (i, t) in trips.iter_mut().enumerate() {
        t.p_regression = if i >= 5_000 && i % 5 == 0 { 0.9 } else { 0.0 };
    }
    let mut policy = SamplingPolicy::new(Policy::Adaptive, 0.1, 0.1, 1).unwrap();
    policy.calibrate(&trips[..5_000]);
    let fixed: f64 = trips[5_000..]
        .iter()
        .map(|t| policy.probability(t))
        .sum::<f64>()
        / 35_000.0;
    let mut scale = policy.initial_scale(&trips[0]);
    let mut spent = Vec::new();
    for t in &trips {
        let pi = policy.probability_at(t, scale);
        spent.push(pi);
        scale = policy.next_scale(scale, pi);
    }
    let recalibrated = spent[5_000..].iter().sum::<f64>() / 35_000.0;
    assert!(fixed > 0.11, "a fixed scale overspends: {fixed}");
    // Within 3% of B once settled: the gain of 1/200 averages over a few hundred trips.
    assert!(
        (recalibrated - 0.1).abs() < 0.003,
        "recalibrated spend {recalibrated}"
    );
    // From a cold start (no calibration) it settles on the budget too.
    let cold = SamplingPolicy::new(Policy::Importance, 0.1, 0.1, 1).unwrap();
    let mut scale = cold.initial_scale(&trips[0]);
    let mut late = 0.0;
    for (i, t) in trips.iter().enumerate() {
        let pi = cold.probability_at(t, scale);
        if i >= 2_000 {
            late += pi;
        }
        scale = cold.next_scale(scale, pi);
    }
    let late = late / (trips.len() - 2_000) as f64;
    assert!((late - 0.1).abs() < 0.003, "cold start spend {late}");
    // Uniform needs no recalibration: its scale is the budget.
    let uniform = SamplingPolicy::new(Policy::Uniform, 0.1, 0.1, 1).unwrap();
    assert_eq!(uniform.next_scale(0.1, 0.1), 0.1);
}
