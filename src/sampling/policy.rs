//! Inclusion probabilities and selection.

use serde::{Deserialize, Serialize};

use crate::hashing::id_hash;
use crate::model::{RoadType, Weather};

/// How trips are chosen for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Every trip (no budget).
    Full,
    /// The same probability B for every trip.
    Uniform,
    /// One rate per stratum, in proportion to the stratum's relative risk.
    Stratified,
    /// In proportion to the predicted probability of a critical event on the trip.
    Importance,
    /// Importance, with more for keys whose posterior suggests a regression.
    Adaptive,
}

impl Policy {
    pub const ALL: [Policy; 5] = [
        Policy::Full,
        Policy::Uniform,
        Policy::Stratified,
        Policy::Importance,
        Policy::Adaptive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Full => "full",
            Policy::Uniform => "uniform",
            Policy::Stratified => "stratified",
            Policy::Importance => "importance",
            Policy::Adaptive => "adaptive",
        }
    }

    pub fn from_name(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Road type x weather x night: the strata of docs/design.md §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stratum {
    pub road: RoadType,
    pub weather: Weather,
    pub night: bool,
}

impl Stratum {
    /// Relative risk of critical events against clear daytime rural roads: the defaults a fleet
    /// starts from before its own data say otherwise (night 1.4x, urban 1.5x, highway 0.7x,
    /// rain 1.5x, fog 2x, snow 2.5x).
    pub fn relative_risk(&self) -> f64 {
        let road = match self.road {
            RoadType::Urban => 1.5,
            RoadType::Highway => 0.7,
            RoadType::Rural => 1.0,
        };
        let weather = match self.weather {
            Weather::Clear => 1.0,
            Weather::Rain => 1.5,
            Weather::Snow => 2.5,
            Weather::Fog => 2.0,
        };
        road * weather * if self.night { 1.4 } else { 1.0 }
    }
}

/// What is known about a trip before its outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TripCovariates<'a> {
    pub trip_id: &'a str,
    pub exposure_hours: f64,
    pub stratum: Stratum,
    /// The vehicle's critical-event rate per exposure hour (its refit prior mean, else the
    /// fleet's).
    pub vehicle_rate: f64,
    /// P(regression) of the vehicle's riskiest series now (0 without evidence).
    pub p_regression: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("budget {0} is not within (0, 1]")]
    Budget(f64),
    #[error("floor {0} is not within [0, 1)")]
    Floor(f64),
}

/// A policy with its budget, floor and seed, calibrated to the budget on a reference set of
/// trips (the recent ones in a stream, the first day in an experiment).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingPolicy {
    pub policy: Policy,
    pub budget: f64,
    /// No trip's probability falls below `floor * budget`.
    pub floor: f64,
    /// How much more an adaptive key with P(regression) = 1 gets (1 = double).
    pub adaptive_boost: f64,
    pub seed: u64,
    /// The multiplier that makes the reference trips' probabilities average the budget.
    scale: f64,
    /// Whether `scale` came from `calibrate` (else a stream starts from its first trip).
    calibrated: bool,
}

/// Step size of the stream's recalibration ([`SamplingPolicy::next_scale`]) on the log scale:
/// about 1/200, so the scale follows changes over a few hundred trips and wanders by a few
/// per cent.
pub const RECALIBRATION_GAIN: f64 = 0.005;

impl SamplingPolicy {
    pub fn new(
        policy: Policy,
        budget: f64,
        floor: f64,
        seed: u64,
    ) -> Result<SamplingPolicy, PolicyError> {
        if !(budget > 0.0 && budget <= 1.0) {
            return Err(PolicyError::Budget(budget));
        }
        if !(0.0..1.0).contains(&floor) {
            return Err(PolicyError::Floor(floor));
        }
        Ok(SamplingPolicy {
            policy,
            budget,
            floor,
            adaptive_boost: 1.0,
            seed,
            // Exact for `uniform`; the others need `calibrate` to spend the budget.
            scale: budget,
            calibrated: false,
        })
    }

    /// The unscaled size of a trip under the policy.
    fn score(&self, trip: &TripCovariates<'_>) -> f64 {
        let risk = trip.stratum.relative_risk();
        match self.policy {
            Policy::Full | Policy::Uniform => 1.0,
            Policy::Stratified => risk,
            Policy::Importance | Policy::Adaptive => {
                let expected = trip.vehicle_rate * risk * trip.exposure_hours;
                let p = -(-expected).exp_m1();
                if self.policy == Policy::Adaptive {
                    p * (1.0 + self.adaptive_boost * trip.p_regression.clamp(0.0, 1.0))
                } else {
                    p
                }
            }
        }
    }

    fn probability_with(&self, score: f64, scale: f64) -> f64 {
        if self.reviews_all() {
            return 1.0;
        }
        (scale * score).clamp(self.floor * self.budget, 1.0)
    }

    /// Chooses the scale so that `reference` trips' probabilities average the budget (bisection
    /// on a monotone function; exact to 1e-12 relative unless the floor alone exceeds it).
    pub fn calibrate(&mut self, reference: &[TripCovariates<'_>]) {
        if reference.is_empty() || self.policy == Policy::Full || self.budget >= 1.0 {
            return;
        }
        let scores: Vec<f64> = reference.iter().map(|t| self.score(t)).collect();
        let mean_at = |scale: f64| {
            scores
                .iter()
                .map(|s| self.probability_with(*s, scale))
                .sum::<f64>()
                / scores.len() as f64
        };
        let (mut low, mut high) = (0.0, 1.0);
        while mean_at(high) < self.budget && high < 1e300 {
            high *= 2.0;
        }
        for _ in 0..200 {
            let mid = 0.5 * (low + high);
            if mean_at(mid) < self.budget {
                low = mid;
            } else {
                high = mid;
            }
        }
        self.scale = 0.5 * (low + high);
        self.calibrated = true;
    }

    /// Whether every trip is reviewed (no budget).
    pub fn reviews_all(&self) -> bool {
        self.policy == Policy::Full || self.budget >= 1.0
    }

    /// Where a stream's scale starts: the calibrated one, else the one that gives its first trip
    /// the budget.
    pub fn initial_scale(&self, first: &TripCovariates<'_>) -> f64 {
        let score = self.score(first);
        if self.calibrated || self.policy == Policy::Uniform || score <= 0.0 {
            self.scale
        } else {
            self.budget / score
        }
    }

    /// The trip's inclusion probability at a stream's current scale.
    pub fn probability_at(&self, trip: &TripCovariates<'_>, scale: f64) -> f64 {
        self.probability_with(self.score(trip), scale)
    }

    /// The scale after a trip given `probability`: a Robbins-Monro step on the log scale
    /// towards probabilities that average the budget, so that a stream keeps spending B as its
    /// mix of trips, vehicle rates and (for `adaptive`) suspected regressions changes, where a
    /// fixed calibration would drift (adaptive overspent by ~10% with one). Uniform needs none.
    pub fn next_scale(&self, scale: f64, probability: f64) -> f64 {
        if self.reviews_all() || self.policy == Policy::Uniform {
            return scale;
        }
        scale * (RECALIBRATION_GAIN * (self.budget - probability) / self.budget).exp()
    }

    /// The trip's inclusion probability.
    pub fn probability(&self, trip: &TripCovariates<'_>) -> f64 {
        self.probability_with(self.score(trip), self.scale)
    }
}

/// A uniform number in [0, 1) fixed by the trip id and the seed.
pub fn uniform_draw(trip_id: &str, seed: u64) -> f64 {
    let hash = id_hash(&[&seed.to_le_bytes(), trip_id.as_bytes()]);
    // SplitMix finaliser: FNV's low bits alone are not uniform enough.
    let mut x = hash;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether the trip is reviewed: reproducible from its id and the seed.
pub fn selected(trip_id: &str, seed: u64, probability: f64) -> bool {
    uniform_draw(trip_id, seed) < probability
}
