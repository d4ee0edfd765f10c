//! Sequential Bayesian change-point detection for one series of event-time bins
//! (docs/design.md §3).
//!
//! Owns the fleet-relative detector the stream runs ([`fleet_relative`]: each key against what
//! the fleet predicts for it), its opening thresholds from a false-alarm budget
//! ([`calibration`]), the hazard-ratio posterior of two Gamma rates ([`hazard_ratio`]) and the
//! episodes built on them ([`episode`]); and the earlier self-baseline run-length detector
//! ([`Detector`], `safetel detect --model self-baseline`), kept for comparison. Pure: no IO,
//! no clocks; the engine feeds it closed bins and persists its state.

pub mod calibration;
pub mod episode;
pub mod fleet_relative;
mod guard_window;
pub mod hazard_ratio;
mod run_length;

pub use episode::{AlertStatus, BinEvidence, Episode, EpisodeParams, EpisodeTracker};
pub use run_length::{BinUpdate, Detector, HazardRatioSummary, StateDecodeError};

use serde::{Deserialize, Serialize};

/// Detector settings; [`DetectorParams::validate`] is the only place they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorParams {
    /// Gamma prior of the rate per exposure hour: shape.
    pub a0: f64,
    /// Gamma prior of the rate per exposure hour: rate (hours).
    pub b0: f64,
    /// Constant change-point hazard H = 1 / expected segment length in bins.
    pub hazard: f64,
    /// Bins before a segment that form its baseline (W).
    pub window_bins: usize,
    /// Hazard ratio that counts as a regression (c).
    pub threshold: f64,
    /// Run lengths with posterior probability below this are dropped (0 keeps all).
    pub prune_below: f64,
    /// Longest run length kept.
    pub max_run_length: usize,
}

impl Default for DetectorParams {
    fn default() -> Self {
        DetectorParams {
            a0: 1.0,
            b0: 100.0,
            hazard: 0.01,
            window_bins: 30,
            threshold: 1.5,
            prune_below: 1e-6,
            max_run_length: 180,
        }
    }
}

/// A setting out of its range; names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("detector setting `{field}` = {value}: {reason}")]
pub struct DetectorParamsError {
    pub field: &'static str,
    pub value: f64,
    pub reason: &'static str,
}

impl DetectorParams {
    pub fn validate(&self) -> Result<(), DetectorParamsError> {
        let check = |field, value: f64, ok: bool, reason| {
            if ok {
                Ok(())
            } else {
                Err(DetectorParamsError {
                    field,
                    value,
                    reason,
                })
            }
        };
        check(
            "a0",
            self.a0,
            self.a0.is_finite() && self.a0 > 0.0,
            "must be a positive number",
        )?;
        check(
            "b0",
            self.b0,
            self.b0.is_finite() && self.b0 > 0.0,
            "must be a positive number",
        )?;
        check(
            "hazard",
            self.hazard,
            self.hazard > 0.0 && self.hazard < 1.0,
            "must be within (0, 1)",
        )?;
        check(
            "threshold",
            self.threshold,
            self.threshold.is_finite() && self.threshold > 0.0,
            "must be positive",
        )?;
        check(
            "prune_below",
            self.prune_below,
            (0.0..1.0).contains(&self.prune_below),
            "must be within [0, 1)",
        )?;
        check(
            "window_bins",
            self.window_bins as f64,
            self.window_bins > 0,
            "must be at least 1",
        )?;
        check(
            "max_run_length",
            self.max_run_length as f64,
            self.max_run_length > 0,
            "must be at least 1",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
