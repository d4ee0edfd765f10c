use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, Poisson};
use statrs::function::gamma::ln_gamma;

use super::*;
use crate::detect::calibration::{NullModel, OpeningRule};

/// ln NB(y | a, b, x), written out from the pmf: Gamma(a + y) / (Gamma(a) y!) (b/(b+x))^a (x/(b+x))^y.
fn ln_nb(y: u64, a: f64, b: f64, x: f64) -> f64 {
    let y = y as f64;
    let tail = if y > 0.0 { y * (x / (b + x)).ln() } else { 0.0 };
    ln_gamma(a + y) - ln_gamma(a) - ln_gamma(y + 1.0) + a * (b / (b + x)).ln() + tail
}

fn ln_sum(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// For each t: P(regression) and the onset (bins back) by enumerating every change time s <= t
/// and every ratio rho: the joint weight of (s, rho) is H pi(rho) prod_{u=s..t} LR_u(rho), LR
/// a ratio of NB pmfs whose baseline at u is the fleet's plus the bins before u - G.
fn enumerate(
    params: &FleetRelativeParams,
    fleet: Baseline,
    data: &[(u64, f64)],
) -> Vec<(f64, u32)> {
    let g = params.guard_bins;
    let pi = 1.0 / HR_GRID.len() as f64;
    let ln_lr = |u: usize, rho: f64| {
        let old = &data[..u.saturating_sub(g)];
        let a = fleet.shape + old.iter().map(|b| b.0).sum::<u64>() as f64;
        let b = fleet.rate + old.iter().map(|b| b.1).sum::<f64>();
        let (y, x) = data[u];
        ln_nb(y, a, b / rho, x) - ln_nb(y, a, b, x)
    };
    (0..data.len())
        .map(|t| {
            let (mut above, mut all) = (Vec::new(), Vec::new());
            let mut best: (f64, f64, u32) = (f64::NEG_INFINITY, f64::NEG_INFINITY, 0);
            for &rho in &HR_GRID {
                let terms: Vec<f64> = (0..=t)
                    .map(|s| (s..=t).map(|u| ln_lr(u, rho)).sum::<f64>())
                    .collect();
                let w = params.hazard.ln() + pi.ln() + ln_sum(&terms);
                all.push(w);
                if rho > params.threshold {
                    above.push(w);
                    // The ratio with the largest weight, and its most probable start.
                    if w > best.0 {
                        let (s, _) = terms
                            .iter()
                            .enumerate()
                            .max_by(|a, b| a.1.total_cmp(b.1))
                            .unwrap();
                        best = (w, 0.0, (t - s + 1) as u32);
                    }
                }
            }
            let evidence = ln_sum(&[vec![0.0], all].concat());
            ((ln_sum(&above) - evidence).exp(), best.2)
        })
        .collect()
}

fn seeded_series(seed: u64, bins: usize, onset: usize, hr: f64, rate: f64) -> Vec<(u64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..bins)
        .map(|t| {
            let x = rng.random_range(0.5..3.0);
            let mean = rate * x * if t >= onset { hr } else { 1.0 };
            (Poisson::new(mean).unwrap().sample(&mut rng) as u64, x)
        })
        .collect()
}

/// 1e-9: both sides are sums of a few hundred terms in double precision; the recursion adds
/// ln(1 + e^v) per bin where the enumeration adds products, so they differ by rounding only.
const ENUMERATION_TOLERANCE: f64 = 1e-9;

#[test]
fn the_recursion_agrees_with_enumerating_change_times_and_hazard_ratios() {
    let params = FleetRelativeParams {
        hazard: 0.05,
        guard_bins: 4,
        threshold: 1.5,
    };
    for (seed, onset, hr, rate) in [(1, 6, 4.0, 0.8), (2, 20, 1.0, 0.3), (3, 3, 2.5, 2.0)] {
        let data = seeded_series(seed, 14, onset, hr, rate);
        let fleet = Baseline {
            shape: 3.0,
            rate: 3.0 / rate,
        };
        let expected = enumerate(&params, fleet, &data);
        let mut detector = FleetDetector::new(params).unwrap();
        for (t, (&(y, x), (p, onset_bins))) in data.iter().zip(&expected).enumerate() {
            let update = detector.update(y, x, fleet);
            assert!(
                (update.p_regression - p).abs() <= ENUMERATION_TOLERANCE * p.max(1e-3),
                "seed {seed} bin {t}: recursion {} enumeration {p}",
                update.p_regression
            );
            assert_eq!(update.onset_bins, *onset_bins, "seed {seed} bin {t}");
            let odds = update.p_regression / (1.0 - update.p_regression);
            assert!(
                (update.ln_odds_regression - odds.ln()).abs() < 1e-6,
                "bin {t}"
            );
        }
    }
}

#[test]
fn the_state_survives_encoding_and_restarts_forget_the_change_only() {
    let params = FleetRelativeParams::default();
    let fleet = Baseline {
        shape: 2.0,
        rate: 200.0,
    };
    let data = seeded_series(7, 80, 50, 5.0, 0.01);
    let mut live = FleetDetector::new(params).unwrap();
    for &(y, x) in &data[..60] {
        live.update(y, x, fleet);
    }
    let mut bytes = Vec::new();
    live.encode(&mut bytes);
    bytes.extend_from_slice(b"rest");
    let (mut restored, rest) = FleetDetector::decode(params, &bytes, StateForm::Compact).unwrap();
    assert_eq!(rest, b"rest");
    assert_eq!(restored, live);
    for &(y, x) in &data[60..] {
        assert_eq!(restored.update(y, x, fleet), live.update(y, x, fleet));
    }
    let baseline = live.posterior_baseline(fleet);
    live.restart();
    assert_eq!(live.posterior_baseline(fleet), baseline);
    let after = live.update(0, 1.0, fleet);
    assert_eq!(
        after.onset_bins, 1,
        "the change statistic forgot the bins before the restart"
    );
    assert!(after.p_regression < 0.05, "{after:?}");
    assert!(FleetDetector::decode(params, &bytes[..10], StateForm::Compact).is_err());
}

/// The default fleet (config/fleet.toml) per vehicle and day: 3 trips of ~40 minutes, 2 h, at
/// a mean stratum risk of 1.685 (urban 1.5 / highway 0.7 / rural 1, rain 1.5, snow 2.5, fog 2,
/// night 1.4, in the generator's shares): 3.37 risk-adjusted hours at 0.004 critical events per
/// risk-adjusted hour (0.0135 a day); 40% of trips autonomous, 0.8 h at 0.05 disengagements an
/// hour (0.04 a day).
#[derive(Clone, Copy)]
struct DefaultFleetClass {
    exposure_per_day: f64,
    rate: f64,
}
const CRITICAL: DefaultFleetClass = DefaultFleetClass {
    exposure_per_day: 3.37,
    rate: 0.004,
};
const DISENGAGEMENT: DefaultFleetClass = DefaultFleetClass {
    exposure_per_day: 0.8,
    rate: 0.05,
};
/// The generator's frailty (log-normal sd 0.3) as a Gamma shape: 1 / (e^{0.09} - 1).
const DEFAULT_FLEET_SHAPE: f64 = 10.6;

/// A vehicle of the default fleet over `bins` days: its frailty, Gamma(2) day-to-day exposure,
/// the rate times `hr` from `onset` on.
fn default_fleet_vehicle(
    rng: &mut StdRng,
    class: DefaultFleetClass,
    bins: usize,
    onset: usize,
    hr: f64,
) -> Vec<(u64, f64)> {
    let z: f64 = rand_distr::StandardNormal.sample(rng);
    let frailty = (0.3 * z - 0.045).exp();
    let day = Gamma::new(2.0, 0.5).unwrap();
    (0..bins)
        .map(|t| {
            let x = class.exposure_per_day * day.sample(rng);
            let mean = class.rate * frailty * x * if t >= onset { hr } else { 1.0 };
            (Poisson::new(mean).unwrap().sample(rng) as u64, x)
        })
        .collect()
}

fn vehicle_rule(budget_per_1000_vehicle_months: f64) -> OpeningRule {
    // One hazard class's share of the budget per vehicle, per bin of one day.
    OpeningRule::calibrate(
        &FleetRelativeParams::default(),
        NullModel {
            shape: DEFAULT_FLEET_SHAPE,
            false_alarms_per_bin: budget_per_1000_vehicle_months / 1000.0 / 30.4375,
        },
    )
}

/// Runs one vehicle and returns the first bin whose ln-odds reach the rule.
fn first_alarm(rule: &OpeningRule, class: DefaultFleetClass, data: &[(u64, f64)]) -> Option<usize> {
    let fleet = Baseline {
        shape: DEFAULT_FLEET_SHAPE,
        rate: DEFAULT_FLEET_SHAPE / class.rate,
    };
    let mut detector = FleetDetector::new(FleetRelativeParams::default()).unwrap();
    data.iter().position(|&(y, x)| {
        let update = detector.update(y, x, fleet);
        let m = detector.mean_exposure_per_bin() * class.rate;
        update.ln_odds_regression >= rule.ln_odds_at(m)
    })
}

#[test]
fn on_null_fleets_the_false_alarm_rate_is_within_its_budget() {
    // 4000 vehicles x 180 days of the default fleet's exposure per class, log-normal frailty
    // (not the Gamma the detector assumes), no regression: 23,655 vehicle-months. At a budget
    // of 1 per 1000 the rule allows ~24 first alarms per class. Tolerance: the count must stay
    // below 41, the 99.9% Poisson quantile at 24, so a calibrated rule fails this less than
    // once in a thousand seeds and one 2x too loose nearly always; and above 2, so a rule far
    // stricter than its budget (spending none of it, losing sensitivity) fails too.
    let rule = vehicle_rule(1.0);
    let (vehicles, days) = (4000, 180);
    let vehicle_months = (vehicles * days) as f64 / 30.4375;
    for (name, class) in [("critical", CRITICAL), ("disengagement", DISENGAGEMENT)] {
        let mut rng = StdRng::seed_from_u64(11);
        let alarms = (0..vehicles)
            .filter(|_| {
                let data = default_fleet_vehicle(&mut rng, class, days, days, 1.0);
                first_alarm(&rule, class, &data).is_some()
            })
            .count();
        eprintln!("{name}: {alarms} false alarms in {vehicle_months:.0} vehicle-months");
        assert!(
            (3..=41).contains(&alarms),
            "{name}: {alarms} false alarms in {vehicle_months:.0} vehicle-months (budget {:.0})",
            vehicle_months / 1000.0
        );
    }
}

/// The oracle's CUSUM of one vehicle that knows its true rate and the ratio: the largest value
/// of max(0, C + y ln rho - (rho - 1) m) over `data`, m its true expected count, and the first
/// bin at which it reaches `threshold`.
fn oracle_cusum(rate: f64, rho: f64, data: &[(u64, f64)], threshold: f64) -> (f64, Option<usize>) {
    let (mut c, mut max, mut first) = (0.0f64, 0.0f64, None);
    for (t, &(y, x)) in data.iter().enumerate() {
        c = (c + y as f64 * rho.ln() - (rho - 1.0) * rate * x).max(0.0);
        max = max.max(c);
        if first.is_none() && c >= threshold {
            first = Some(t);
        }
    }
    (max, first)
}

/// A default-fleet vehicle with its true rate: (rate per unit exposure, series).
fn vehicle_with_rate(
    rng: &mut StdRng,
    class: DefaultFleetClass,
    bins: usize,
    onset: usize,
    hr: f64,
) -> (f64, Vec<(u64, f64)>) {
    let z: f64 = rand_distr::StandardNormal.sample(rng);
    let rate = class.rate * (0.3 * z - 0.045).exp();
    let day = Gamma::new(2.0, 0.5).unwrap();
    let data = (0..bins)
        .map(|t| {
            let x = class.exposure_per_day * day.sample(rng);
            let mean = rate * x * if t >= onset { hr } else { 1.0 };
            (Poisson::new(mean).unwrap().sample(rng) as u64, x)
        })
        .collect();
    (rate, data)
}

/// Over `seeds` vehicles whose rate rises 5x on day 30: the share the fleet-relative detector
/// alarms within 30 days, the share the oracle does (its threshold set from the same budget
/// on 4000 null vehicles x 180 days), and the share of the same vehicles without the rise
/// that the fleet-relative detector alarms on within 60 days.
fn fivefold_rise(class: DefaultFleetClass, seeds: u64) -> (f64, f64, f64) {
    let rule = vehicle_rule(1.0);
    let rho = 5.0;
    // The oracle's threshold: the budget's share of null vehicles (1 per 1000 months).
    let mut rng = StdRng::seed_from_u64(77);
    let (vehicles, days) = (4000, 180);
    let mut maxima: Vec<f64> = (0..vehicles)
        .map(|_| {
            let (rate, data) = vehicle_with_rate(&mut rng, class, days, days, 1.0);
            oracle_cusum(rate, rho, &data, f64::INFINITY).0
        })
        .collect();
    maxima.sort_by(|a, b| b.total_cmp(a));
    let allowed = (vehicles * days) as f64 / 30.4375 / 1000.0;
    let oracle_threshold = maxima[allowed as usize - 1];
    let (mut detected, mut oracle, mut null_alarms) = (0, 0, 0);
    for seed in 0..seeds {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let (rate, rise) = vehicle_with_rate(&mut rng, class, 60, 30, rho);
        detected += usize::from(first_alarm(&rule, class, &rise).is_some_and(|t| t >= 30));
        let (_, first) = oracle_cusum(rate, rho, &rise, oracle_threshold);
        oracle += usize::from(first.is_some_and(|t| t >= 30));
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let (_, flat) = vehicle_with_rate(&mut rng, class, 60, 60, 1.0);
        null_alarms += usize::from(first_alarm(&rule, class, &flat).is_some());
    }
    let share = |n: usize| n as f64 / seeds as f64;
    (share(detected), share(oracle), share(null_alarms))
}

#[test]
fn a_fivefold_rise_for_thirty_days_is_caught_nearly_as_often_as_the_data_allow() {
    // At the default fleet's exposure (2 h a day) a 5x rise for 30 days brings 2 critical
    // events (0.4 before) or 6 disengagements (1.2 before); at the commercial fleet's (8 h a
    // day) 8 critical events (1.6 before). At <= 1 false alarm per 1000 vehicle-months even a
    // detector that knows the vehicle's rate and HR (the oracle) needs ~5, ~7 or ~9 events in
    // the month, so no detector catches most of them at these exposures. Measured over 400
    // seeds (printed): critical 10% (oracle 8%), disengagement 34% (oracle 38%), commercial
    // critical 42% (oracle 51%). Asserted: at least 70% of the oracle's share (these shares have
    // sd ~1.5-2.5 points), and the same vehicles without the rise alarm in at most 1% (the
    // budget allows ~0.2% in 60 days).
    let commercial = DefaultFleetClass {
        exposure_per_day: 4.0 * CRITICAL.exposure_per_day,
        ..CRITICAL
    };
    for (name, class) in [
        ("critical", CRITICAL),
        ("disengagement", DISENGAGEMENT),
        ("commercial critical", commercial),
    ] {
        let (detected, oracle, null) = fivefold_rise(class, 400);
        eprintln!(
            "{name} 5x for 30 days: detected {detected:.3}, oracle {oracle:.3}, null {null:.3}"
        );
        assert!(
            detected >= 0.7 * oracle,
            "{name}: {detected} against the oracle's {oracle}"
        );
        assert!(null <= 0.01, "{name}: null alarms {null}");
    }
}

#[test]
fn the_compact_form_keeps_every_exposure_exactly_and_writes_whole_milliseconds_shorter() {
    // A vehicle series sees hours from whole milliseconds; a cohort series sees expected
    // counts, which are not. Both, and a mix (with zero exposure), must read back bit for bit,
    // and the vehicle's state must be shorter than in the varint form (8-byte exposures).
    let params = FleetRelativeParams::default();
    let fleet = Baseline {
        shape: 2.0,
        rate: 200.0,
    };
    let mut rng = StdRng::seed_from_u64(31);
    let vehicle: Vec<(u64, f64)> = (0..45)
        .map(|t| {
            let ms: u64 = if t % 9 == 0 {
                0
            } else {
                rng.random_range(0..40_000_000)
            };
            (rng.random_range(0..3), ms as f64 / EXPOSURE_UNITS_PER_HOUR)
        })
        .collect();
    let cohort: Vec<(u64, f64)> = (0..45)
        .map(|_| (rng.random_range(0..30), rng.random_range(0.0..12.0)))
        .collect();
    let mixed: Vec<(u64, f64)> = vehicle
        .iter()
        .zip(&cohort)
        .flat_map(|(v, c)| [*v, *c])
        .collect();
    for (name, bins) in [
        ("vehicle", &vehicle),
        ("cohort", &cohort),
        ("mixed", &mixed),
    ] {
        let mut live = FleetDetector::new(params).unwrap();
        for &(y, x) in bins {
            live.update(y, x, fleet);
        }
        let (mut compact, mut varint) = (Vec::new(), Vec::new());
        live.encode_as(StateForm::Compact, &mut compact);
        live.encode_as(StateForm::Varint, &mut varint);
        for (form, bytes) in [(StateForm::Compact, &compact), (StateForm::Varint, &varint)] {
            let (read, rest) = FleetDetector::decode(params, bytes, form).unwrap();
            assert!(rest.is_empty(), "{name} {form:?}");
            assert_eq!(read, live, "{name} {form:?}");
        }
        if name == "vehicle" {
            // 30 guarded bins, each exposure at most 4 bytes instead of 8.
            assert!(
                compact.len() + 4 * 30 <= varint.len(),
                "{} vs {}",
                compact.len(),
                varint.len()
            );
        } else if name == "cohort" {
            assert_eq!(
                compact.len(),
                varint.len(),
                "the same bytes where no exposure is whole"
            );
        }
    }
}
