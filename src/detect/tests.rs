use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, Poisson};

use super::hazard_ratio::{GammaRate, HazardRatio};
use super::*;

/// A seeded series of (events, exposure hours): rate `rate` per hour, times `hr` from `onset`.
fn series(
    seed: u64,
    bins: usize,
    onset: usize,
    rate: f64,
    hr: f64,
    exposure: f64,
) -> Vec<(u64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..bins)
        .map(|t| {
            // The detector keeps exposure at f32 precision; give it values it keeps exactly.
            let e = f64::from((exposure * rng.random_range(0.7..1.3)) as f32);
            let lambda = rate * if t >= onset { hr } else { 1.0 } * e;
            (Poisson::new(lambda).unwrap().sample(&mut rng) as u64, e)
        })
        .collect()
}

fn ln_nb(y: u64, a: f64, b: f64, e: f64) -> f64 {
    use statrs::function::gamma::ln_gamma;
    let y = y as f64;
    ln_gamma(a + y) - ln_gamma(a) - ln_gamma(y + 1.0)
        + a * (b / (b + e)).ln()
        + y * (e / (b + e)).ln()
}

/// The textbook O(T^2) recursion over every run length, with no pruning and no cap: for each t,
/// (P(regression), MAP run length).
fn exact_enumeration(p: &DetectorParams, data: &[(u64, f64)]) -> Vec<(f64, usize)> {
    let mut joint: Vec<Vec<f64>> = Vec::new(); // joint[t][r - 1] = ln P(r_t = r, y_1..t)
    let mut out = Vec::new();
    for t in 0..data.len() {
        let (y, e) = data[t];
        let mut row = vec![f64::NEG_INFINITY; t + 1];
        if t == 0 {
            row[0] = ln_nb(y, p.a0, p.b0, e);
        } else {
            let prev = &joint[t - 1];
            let max = prev.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let evidence = max + prev.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            row[0] = evidence + p.hazard.ln() + ln_nb(y, p.a0, p.b0, e);
            for r in 2..=t + 1 {
                // The run of length r - 1 at t - 1 covers bins t - r + 1 ..= t - 1.
                let bins = &data[t + 1 - r..t];
                let ys: u64 = bins.iter().map(|b| b.0).sum();
                let es: f64 = bins.iter().map(|b| b.1).sum();
                row[r - 1] =
                    prev[r - 2] + (1.0 - p.hazard).ln() + ln_nb(y, p.a0 + ys as f64, p.b0 + es, e);
            }
        }
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        let mut p_regression = 0.0;
        let mut map = (1, f64::NEG_INFINITY);
        for r in 1..=t + 1 {
            let post = (row[r - 1] - total).exp();
            if row[r - 1] > map.1 {
                map = (r, row[r - 1]);
            }
            let segment = &data[t + 1 - r..=t];
            let base_from = (t + 1 - r).saturating_sub(p.window_bins);
            let baseline = &data[base_from..t + 1 - r];
            let e_base: f64 = baseline.iter().map(|b| b.1).sum();
            if baseline.is_empty() || e_base <= 0.0 {
                continue;
            }
            let current = GammaRate {
                shape: p.a0 + segment.iter().map(|b| b.0).sum::<u64>() as f64,
                rate: p.b0 + segment.iter().map(|b| b.1).sum::<f64>(),
            };
            let base = GammaRate {
                shape: p.a0 + baseline.iter().map(|b| b.0).sum::<u64>() as f64,
                rate: p.b0 + e_base,
            };
            p_regression += post
                * HazardRatio::new(current, base)
                    .unwrap()
                    .prob_above(p.threshold);
        }
        out.push((p_regression, map.0));
        joint.push(row);
    }
    out
}

fn detector_outputs(p: DetectorParams, data: &[(u64, f64)]) -> Vec<(f64, usize)> {
    let mut detector = Detector::new(p).unwrap();
    data.iter()
        .map(|&(y, e)| {
            let u = detector.update(y, e);
            (u.p_regression, u.map_run_length)
        })
        .collect()
}

/// Runs the detector with `params` and the exact enumeration without pruning on the same seeded
/// series, and checks P(regression) within `tolerance` (and the MAP run length if asked).
fn compare_with_exact(
    seeds: std::ops::Range<u64>,
    params: DetectorParams,
    tolerance: f64,
    same_map: bool,
) {
    for seed in seeds {
        let data = series(seed, 80, 40, 0.01, 3.0, 300.0);
        let unpruned = DetectorParams {
            prune_below: 0.0,
            max_run_length: 1000,
            ..params
        };
        let exact = exact_enumeration(&unpruned, &data);
        let ours = detector_outputs(params, &data);
        for (t, (a, b)) in exact.iter().zip(&ours).enumerate() {
            assert!(
                (a.0 - b.0).abs() < tolerance,
                "seed {seed} bin {t}: exact {} vs detector {}",
                a.0,
                b.0
            );
            if same_map {
                assert_eq!(a.1, b.1, "seed {seed} bin {t}: MAP run length");
            }
        }
    }
}

#[test]
fn without_pruning_the_detector_equals_exact_enumeration() {
    // Floating-point sums in a different order only: 1e-9 absolute on probabilities.
    let params = DetectorParams {
        b0: 100.0,
        window_bins: 10,
        prune_below: 0.0,
        max_run_length: 1000,
        ..Default::default()
    };
    compare_with_exact(0..4, params, 1e-9, true);
}

#[test]
fn with_default_pruning_the_detector_stays_within_1e_4() {
    // Dropped runs each had probability < 1e-6; over 80 bins their mass cannot move P(regression)
    // by more than ~1e-4.
    compare_with_exact(
        10..14,
        DetectorParams {
            b0: 100.0,
            window_bins: 10,
            ..Default::default()
        },
        1e-4,
        false,
    );
}

#[test]
fn hazard_ratio_probability_and_quantiles_match_monte_carlo() {
    // 400k draws: the standard error of a probability is < 0.0008, so 0.004 is > 5 sd; quantiles
    // of the ratio within 3% relative.
    let mut rng = StdRng::seed_from_u64(7);
    for (a1, b1, a0, b0, c) in [
        (12.0, 400.0, 30.0, 2000.0, 1.5),
        (3.0, 50.0, 5.0, 120.0, 1.5),
        (40.0, 900.0, 15.0, 600.0, 2.0),
    ] {
        let hr = HazardRatio::new(
            GammaRate {
                shape: a1,
                rate: b1,
            },
            GammaRate {
                shape: a0,
                rate: b0,
            },
        )
        .unwrap();
        let (g1, g0) = (
            Gamma::new(a1, 1.0 / b1).unwrap(),
            Gamma::new(a0, 1.0 / b0).unwrap(),
        );
        let n = 400_000;
        let mut ratios: Vec<f64> = (0..n)
            .map(|_| g1.sample(&mut rng) / g0.sample(&mut rng))
            .collect();
        let above = ratios.iter().filter(|r| **r > c).count() as f64 / n as f64;
        assert!(
            (hr.prob_above(c) - above).abs() < 0.004,
            "P(HR > {c}): exact {} vs MC {above}",
            hr.prob_above(c)
        );
        ratios.sort_by(f64::total_cmp);
        for q in [0.025, 0.5, 0.975] {
            let mc = ratios[(q * n as f64) as usize];
            let exact = hr.quantile(q);
            assert!(
                (exact / mc - 1.0).abs() < 0.03,
                "q{q}: exact {exact} vs MC {mc}"
            );
        }
    }
}

#[test]
fn a_tripled_hazard_is_detected_and_a_steady_one_is_not() {
    // A cohort-sized series: 800 h per bin at 0.01 per hour, HR 3 from bin 60.
    let data = series(99, 120, 60, 0.01, 3.0, 800.0);
    let params = DetectorParams {
        b0: 100.0,
        ..Default::default()
    };
    let out = detector_outputs(params, &data);
    assert!(
        out[..60].iter().all(|(p, _)| *p < 0.95),
        "no alarm before the onset"
    );
    let detected = out[60..]
        .iter()
        .position(|(p, _)| *p >= 0.95)
        .expect("detected");
    assert!(detected <= 15, "detected {detected} bins after the onset");
    let steady = detector_outputs(params, &series(98, 120, 1000, 0.01, 1.0, 800.0));
    assert!(
        steady.iter().all(|(p, _)| *p < 0.95),
        "no alarm on a steady series"
    );
}

#[test]
fn settings_are_checked_and_errors_name_the_field() {
    let err = Detector::new(DetectorParams {
        hazard: 1.5,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.field, "hazard");
    let err = Detector::new(DetectorParams {
        b0: 0.0,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.field, "b0");
}

#[test]
fn the_run_length_cap_keeps_the_posterior_whole_and_still_detects() {
    // With a cap of 20 bins the longest run absorbs longer ones: never more than 20 run lengths,
    // total probability 1 (to 1e-12, rounding only), and a tripled cohort hazard is still found.
    let params = DetectorParams {
        max_run_length: 20,
        ..Default::default()
    };
    let mut detector = Detector::new(params).unwrap();
    let data = series(5, 200, 150, 0.01, 3.0, 800.0);
    let mut first_alarm = None;
    for (t, &(y, e)) in data.iter().enumerate() {
        let update = detector.update(y, e);
        let posterior = detector.run_length_posterior();
        assert!(
            posterior.iter().all(|(r, _)| *r <= 20),
            "bin {t}: {posterior:?}"
        );
        let total: f64 = posterior.iter().map(|(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-12, "bin {t}: total {total}");
        if update.p_regression >= 0.95 && first_alarm.is_none() {
            first_alarm = Some(t);
        }
    }
    let alarm = first_alarm.expect("detected");
    assert!((150..170).contains(&alarm), "first alarm at bin {alarm}");
}

#[test]
fn state_survives_encoding_and_goes_on_identically() {
    let data = series(21, 120, 60, 0.01, 3.0, 300.0);
    let params = DetectorParams::default();
    let mut detector = Detector::new(params).unwrap();
    for &(y, e) in &data[..80] {
        detector.update(y, e);
    }
    let mut bytes = Vec::new();
    detector.encode(&mut bytes);
    bytes.push(0xAB);
    let (mut restored, rest) = Detector::decode(params, &bytes).unwrap();
    assert_eq!(rest, &[0xAB], "exactly the state is read");
    assert_eq!(restored, detector);
    for &(y, e) in &data[80..] {
        assert_eq!(restored.update(y, e), detector.update(y, e));
    }
    assert!(
        Detector::decode(params, &bytes[..bytes.len() - 9]).is_err(),
        "truncated state is an error"
    );
}
