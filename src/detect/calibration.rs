//! Opening thresholds from a false-alarm budget, by simulation under each key kind's null
//! (docs/design.md §3).
//!
//! A user states the false alarms they can afford per 1000 vehicle-months; the project turns
//! that into the ln-odds of P(regression) at which an episode opens. What a series' null
//! looks like depends mostly on how many events it expects per bin, m: at m = 0.02 (a car at
//! 2 h a day) a false alarm needs several events in a few weeks, at m = 2 (a cohort) it needs a
//! run of slightly high days. So the threshold is a function of m, tabulated once at a grid of
//! m ([`EXPECTED_GRID`]) and interpolated in ln m.
//!
//! At each grid point, `SERIES` seeded series of `BINS` bins are simulated under the null of
//! the kind: a key's rate is the fleet mean times a Gamma(shape, shape) frailty (mean 1), the
//! exposure of a bin is m times a Gamma(2, 2) draw (day-to-day variation as in the project's
//! fleets), the count is Poisson. Each series is run through [`FleetDetector`] against the
//! fleet's Gamma(shape, shape), and its largest ln-odds recorded; the threshold is the value
//! exceeded by the budgeted share of series (false alarms per bin x `BINS` x `SERIES`, the
//! largest maxima). A series that starts alarming usually keeps one episode open, so the share
//! of series that ever cross is the rate of first alarms.
//!
//! Cost: `SERIES` x `BINS` x grid updates, about a second at start-up on two cores (grid points
//! run side by side, each from its own seed, so the table does not depend on the thread count);
//! the table is cached per settings for the life of the process. Pure and deterministic.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Gamma, Poisson};

use super::fleet_relative::{Baseline, FleetDetector, FleetRelativeParams};

/// Expected events per bin at which thresholds are simulated.
pub const EXPECTED_GRID: [f64; 9] = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0];
/// Series per grid point and their length in bins.
const SERIES: usize = 6000;
const BINS: usize = 90;
const SEED: u64 = 2026_1201;

/// The null a key kind is calibrated under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NullModel {
    /// Shape of the Gamma spread of keys' rates around the fleet mean (the detector's prior).
    pub shape: f64,
    /// False alarms allowed per series and bin.
    pub false_alarms_per_bin: f64,
}

/// The opening threshold of one key kind as a function of expected events per bin.
#[derive(Debug, Clone, PartialEq)]
pub struct OpeningRule {
    /// ln-odds threshold at each point of [`EXPECTED_GRID`].
    pub ln_odds: Vec<f64>,
    pub null: NullModel,
}

impl OpeningRule {
    /// Simulates the table (or takes it from the process's cache).
    pub fn calibrate(params: &FleetRelativeParams, null: NullModel) -> OpeningRule {
        static CACHE: OnceLock<Mutex<HashMap<String, Vec<f64>>>> = OnceLock::new();
        let key = format!("{params:?}/{null:?}");
        let cache = CACHE.get_or_init(Default::default);
        if let Some(table) = cache.lock().expect("not poisoned").get(&key) {
            return OpeningRule {
                ln_odds: table.clone(),
                null,
            };
        }
        // Grid points are independent: simulated side by side, each from its own seed.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut ln_odds = vec![0.0; EXPECTED_GRID.len()];
        std::thread::scope(|scope| {
            for (w, chunk) in ln_odds
                .chunks_mut(EXPECTED_GRID.len().div_ceil(workers))
                .enumerate()
            {
                let first = w * EXPECTED_GRID.len().div_ceil(workers);
                scope.spawn(move || {
                    for (j, out) in chunk.iter_mut().enumerate() {
                        let i = first + j;
                        *out = simulate_threshold(params, null, EXPECTED_GRID[i], SEED + i as u64);
                    }
                });
            }
        });
        cache
            .lock()
            .expect("not poisoned")
            .insert(key, ln_odds.clone());
        OpeningRule { ln_odds, null }
    }

    /// The ln-odds threshold for a key expecting `expected_per_bin` events a bin.
    pub fn ln_odds_at(&self, expected_per_bin: f64) -> f64 {
        let grid = &EXPECTED_GRID;
        let m = expected_per_bin.clamp(grid[0], grid[grid.len() - 1]);
        let i = grid.partition_point(|&g| g <= m).clamp(1, grid.len() - 1);
        let (m0, m1) = (grid[i - 1].ln(), grid[i].ln());
        let w = ((m.ln() - m0) / (m1 - m0)).clamp(0.0, 1.0);
        self.ln_odds[i - 1] * (1.0 - w) + self.ln_odds[i] * w
    }

    /// The same threshold as a probability.
    pub fn p_open_at(&self, expected_per_bin: f64) -> f64 {
        let l = self.ln_odds_at(expected_per_bin);
        1.0 / (1.0 + (-l).exp())
    }
}

fn simulate_threshold(params: &FleetRelativeParams, null: NullModel, m: f64, seed: u64) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let frailty = Gamma::new(null.shape, 1.0 / null.shape).expect("positive shape");
    let day = Gamma::new(2.0, 0.5).expect("valid");
    let fleet = Baseline {
        shape: null.shape,
        rate: null.shape,
    };
    let mut maxima: Vec<f64> = Vec::with_capacity(SERIES);
    for _ in 0..SERIES {
        let rate = frailty.sample(&mut rng);
        let mut detector = FleetDetector::new(*params).expect("validated");
        let mut max = f64::NEG_INFINITY;
        for _ in 0..BINS {
            let x = m * day.sample(&mut rng);
            let mean = rate * x;
            let y = if mean > 0.0 {
                Poisson::new(mean).expect("positive").sample(&mut rng) as u64
            } else {
                0
            };
            max = max.max(detector.update(y, x, fleet).ln_odds_regression);
        }
        maxima.push(max);
    }
    maxima.sort_by(|a, b| b.total_cmp(a));
    // The budget's count of alarms among these series: the k-th largest maximum is reached by
    // exactly k of them. Where the budget allows less than one here, one unit of ln-odds above
    // the largest, so no simulated null series would alarm.
    let allowed = null.false_alarms_per_bin * (SERIES * BINS) as f64;
    match allowed.floor() as usize {
        0 => maxima[0] + 1.0,
        k => maxima[k.min(SERIES) - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_finite_cached_and_tighter_budgets_raise_them() {
        let params = FleetRelativeParams::default();
        let null = |rate| NullModel {
            shape: 8.0,
            false_alarms_per_bin: rate,
        };
        let rule = OpeningRule::calibrate(&params, null(1.6e-5));
        let strict = OpeningRule::calibrate(&params, null(1.6e-6));
        for (i, &m) in EXPECTED_GRID.iter().enumerate() {
            eprintln!(
                "m {m:>6}: ln-odds {:.2} (p_open {:.6}), 10x stricter {:.2}",
                rule.ln_odds[i],
                rule.p_open_at(m),
                strict.ln_odds[i]
            );
            assert!(rule.ln_odds[i].is_finite());
            assert!(strict.ln_odds[i] >= rule.ln_odds[i], "at m = {m}");
        }
        assert_eq!(
            OpeningRule::calibrate(&params, null(1.6e-5)),
            rule,
            "cached"
        );
        let cohort = OpeningRule::calibrate(
            &params,
            NullModel {
                shape: 100.0,
                false_alarms_per_bin: 7.8e-6,
            },
        );
        eprintln!("cohort: {:?}", cohort.ln_odds);
        // Interpolation in ln m: between two grid points, between their thresholds.
        let between = rule.ln_odds_at((EXPECTED_GRID[2] * EXPECTED_GRID[3]).sqrt());
        let (a, b) = (rule.ln_odds[2], rule.ln_odds[3]);
        assert!((between - (a + b) / 2.0).abs() < 1e-9);
        assert_eq!(
            rule.ln_odds_at(1e-9),
            rule.ln_odds[0],
            "clamped below the grid"
        );
    }
}
