//! The fleet-relative change detector (docs/design.md §3): each key's counts against what the fleet
//! predicts for it, with a Shiryaev-Roberts recursion per hazard ratio.
//!
//! Bin t has count y_t and exposure x_t: risk-adjusted hours for a vehicle, the members'
//! expected count for a cohort. Before a change y_t ~ Poisson(lambda x_t) with
//! lambda ~ Gamma(alpha_t, beta_t): the fleet's distribution ([`Baseline`], given by the caller)
//! updated with the key's own bins older than the guard window G, so a recent rise is not
//! absorbed into the baseline. From an unknown bin tau the rate is rho x lambda, rho on the
//! grid [`HR_GRID`] (equal prior weights). Bin t's predictive likelihood ratio is
//!
//!   LR_t(rho) = NB(y_t | alpha_t, beta_t / rho, x_t) / NB(y_t | alpha_t, beta_t, x_t)
//!             = rho^y_t ((beta_t + x_t) / (beta_t + rho x_t))^(alpha_t + y_t),
//!
//! and the Shiryaev-Roberts statistic W_t(rho) = sum over change times s <= t of
//! prod_{u=s..t} LR_u(rho) obeys W_t = (1 + W_{t-1}) LR_t: O(grid) per bin, whatever the
//! history. With a change-point prior of hazard H per bin (in its quasi-stationary form), the
//! posterior odds of "changed at some tau <= t with ratio rho" are H pi(rho) W_t(rho), so
//! P(regression) = P(tau <= t, rho > threshold | y) = H S+ / (1 + H S), S = sum pi W and S+ its
//! part with rho > threshold.
//!
//! Opening rule from a false-alarm budget ([`opening_probability`]): under a correct null each
//! W_t(rho) - t is a martingale, so the mixture S+ / pi+ is a non-negative submartingale with
//! mean t and (Doob) P(max_{t<=T} S+ / pi+ >= A) <= T / A. Since P(regression) >= p implies
//! S+ >= p / ((1 - p) H), choosing p so that p / ((1 - p) H) = A pi+ bounds false alarms by one
//! per A bins per series.
//!
//! Onset: for the most probable ratio above the threshold, the start s of the most probable
//! segment (a max-product recursion beside the sum). Hazard ratio median and 95% CrI: the rate
//! after the onset (Gamma with one pseudo-event at the baseline mean, plus the segment's events
//! and exposure) against the baseline (docs/design.md §3's Beta formula, [`super::hazard_ratio`]).
//! Pure: no IO, no clocks.

use serde::{Deserialize, Serialize};

use super::guard_window::GuardWindow;
use super::hazard_ratio::{GammaRate, HazardRatio};
use super::{HazardRatioSummary, StateDecodeError};

/// Hazard ratios a change may have, with equal prior weight.
pub const HR_GRID: [f64; 9] = [1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0];
const GRID: usize = HR_GRID.len();

/// The fleet's Gamma distribution of a key's baseline rate per unit of exposure (shape, rate),
/// before the key's own history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub shape: f64,
    pub rate: f64,
}

impl Baseline {
    pub fn is_proper(&self) -> bool {
        self.shape.is_finite() && self.rate.is_finite() && self.shape > 0.0 && self.rate > 0.0
    }

    /// The baseline rate's Gamma posterior.
    pub fn rate(&self) -> GammaRate {
        GammaRate {
            shape: self.shape,
            rate: self.rate,
        }
    }

    /// The rate after an onset: one pseudo-event at the baseline mean, plus the `events` and
    /// `exposure` since.
    pub fn after_onset(&self, events: u64, exposure: f64) -> GammaRate {
        GammaRate {
            shape: 1.0 + events as f64,
            rate: self.rate / self.shape + exposure,
        }
    }
}

/// Settings of the fleet-relative detector; checked by [`FleetRelativeParams::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FleetRelativeParams {
    /// Prior probability of a change per bin (H).
    pub hazard: f64,
    /// Bins a key's own history waits before it enters its baseline (G).
    pub guard_bins: usize,
    /// Hazard ratio that counts as a regression.
    pub threshold: f64,
}

impl Default for FleetRelativeParams {
    fn default() -> Self {
        FleetRelativeParams {
            hazard: 0.01,
            guard_bins: 30,
            threshold: 1.5,
        }
    }
}

impl FleetRelativeParams {
    pub fn validate(&self) -> Result<(), super::DetectorParamsError> {
        let fail = |field, value, reason| {
            Err(super::DetectorParamsError {
                field,
                value,
                reason,
            })
        };
        if !(self.hazard > 0.0 && self.hazard < 1.0) {
            return fail("hazard", self.hazard, "must be within (0, 1)");
        }
        if self.guard_bins == 0 {
            return fail("guard_bins", 0.0, "must be at least 1");
        }
        if !(self.threshold.is_finite()
            && self.threshold >= 1.0
            && self.threshold < HR_GRID[GRID - 1])
        {
            return fail(
                "threshold",
                self.threshold,
                "must be within [1, 8): the largest hazard ratio modelled is 8",
            );
        }
        Ok(())
    }

    /// Prior weight of the grid's ratios above the threshold.
    pub fn weight_above(&self) -> f64 {
        HR_GRID.iter().filter(|&&r| r > self.threshold).count() as f64 / GRID as f64
    }
}

/// P(regression) at which an episode opens so that a series raises at most one false alarm
/// per `bins_per_false_alarm` bins when its null is right (the Doob bound in the module doc).
pub fn opening_probability(params: &FleetRelativeParams, bins_per_false_alarm: f64) -> f64 {
    let odds = params.hazard * bins_per_false_alarm.max(1.0) * params.weight_above();
    odds / (1.0 + odds)
}

/// A count held in 32 bits: a key's events in a bin, or in a segment of bins, stay far below
/// 2^32 (at the extreme, the cap).
fn narrow(count: u64) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The most probable segment ending now, for one ratio: its log product and its sums.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    ln_max: f64,
    exposure: f64,
    /// Bins in the segment (its start is this many bins back, counting the current one).
    bins: u32,
    events: u32,
}

const NO_SEGMENT: Segment = Segment {
    ln_max: f64::NEG_INFINITY,
    bins: 0,
    events: 0,
    exposure: 0.0,
};

/// The fleet-relative detector of one series (key and hazard class).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetDetector {
    params: FleetRelativeParams,
    /// Sums of the key's own bins older than the guard window.
    old_events: u64,
    old_exposure: f64,
    old_bins: u64,
    /// The last `guard_bins` bins, oldest first, in the stored form.
    guard: GuardWindow,
    /// ln W_t(rho) per grid point (-inf before any bin since the last restart).
    ln_sr: [f64; GRID],
    segments: [Segment; GRID],
}

/// What the detector concludes after a bin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FleetUpdate {
    /// P(changed and hazard ratio > threshold).
    pub p_regression: f64,
    /// P(changed at all).
    pub p_changed: f64,
    /// ln of the posterior odds of a regression, P / (1 - P): what the opening rule compares
    /// (it keeps its resolution where P is within 1e-16 of 1).
    pub ln_odds_regression: f64,
    /// The bin's expected count before any change: x_t times the baseline's mean rate.
    pub expected: f64,
    /// Bins from the onset estimate to now, counting the current one (1 = this bin; 0 before
    /// any bin since the last restart).
    pub onset_bins: u32,
}

impl FleetDetector {
    pub fn new(params: FleetRelativeParams) -> Result<FleetDetector, super::DetectorParamsError> {
        params.validate()?;
        Ok(FleetDetector {
            params,
            old_events: 0,
            old_exposure: 0.0,
            old_bins: 0,
            guard: GuardWindow::new(),
            ln_sr: [f64::NEG_INFINITY; GRID],
            segments: [NO_SEGMENT; GRID],
        })
    }

    pub fn params(&self) -> &FleetRelativeParams {
        &self.params
    }

    /// The baseline for the next bin: the fleet's, updated with the key's bins older than G.
    pub fn posterior_baseline(&self, fleet: Baseline) -> Baseline {
        Baseline {
            shape: fleet.shape + self.old_events as f64,
            rate: fleet.rate + self.old_exposure,
        }
    }

    /// Own history: (events, exposure) older than the guard window, and in it.
    pub fn own_sums(&self) -> ((u64, f64), (u64, f64)) {
        let guarded = self
            .guard
            .iter()
            .fold((0, 0.0), |(y, x), (events, exposure)| {
                (y + u64::from(events), x + exposure)
            });
        ((self.old_events, self.old_exposure), guarded)
    }

    /// Mean exposure per bin over the key's whole history (0 before any bin).
    pub fn mean_exposure_per_bin(&self) -> f64 {
        let ((_, old_x), (_, guard_x)) = self.own_sums();
        let bins = self.old_bins + self.guard.len() as u64;
        if bins == 0 {
            0.0
        } else {
            (old_x + guard_x) / bins as f64
        }
    }

    /// Bytes this detector holds.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.guard.heap_bytes()
    }

    /// Forgets any change seen so far (after an episode resolves); the baseline stays.
    pub fn restart(&mut self) {
        self.ln_sr = [f64::NEG_INFINITY; GRID];
        self.segments = [NO_SEGMENT; GRID];
    }

    /// Adds bin (`events`, `exposure`) judged against `fleet` (the fleet's distribution for
    /// this key now). Negative or non-finite exposure counts as none; an improper `fleet`
    /// leaves the change statistics as they were (the bin still enters the own history).
    pub fn update(&mut self, events: u64, exposure: f64, fleet: Baseline) -> FleetUpdate {
        let x = if exposure.is_finite() {
            exposure.max(0.0)
        } else {
            0.0
        };
        let base = self.posterior_baseline(fleet);
        if base.is_proper() {
            let (alpha, beta) = (base.shape, base.rate);
            let y = events as f64;
            let ln_no_change = (beta + x).ln();
            for (i, &rho) in HR_GRID.iter().enumerate() {
                let ln_lr = y * rho.ln() + (alpha + y) * (ln_no_change - (beta + rho * x).ln());
                // W_t = (1 + W_{t-1}) LR_t
                self.ln_sr[i] = ln_one_plus_exp(self.ln_sr[i]) + ln_lr;
                // The best segment either goes on or starts at this bin.
                let seg = &mut self.segments[i];
                if seg.ln_max > 0.0 {
                    seg.ln_max += ln_lr;
                    seg.bins += 1;
                    seg.events = narrow(u64::from(seg.events) + events);
                    seg.exposure += x;
                } else {
                    *seg = Segment {
                        ln_max: ln_lr,
                        bins: 1,
                        events: narrow(events),
                        exposure: x,
                    };
                }
            }
        }
        self.guard.push_back(narrow(events), x);
        self.age_guarded_bins();
        self.conclude(base, x)
    }

    /// Moves the bins past the guard window into the old sums.
    fn age_guarded_bins(&mut self) {
        while self.guard.len() > self.params.guard_bins {
            let Some((events, exposure)) = self.guard.pop_front() else {
                break;
            };
            self.old_events += u64::from(events);
            self.old_exposure += exposure;
            self.old_bins += 1;
        }
    }

    fn conclude(&self, base: Baseline, x: f64) -> FleetUpdate {
        let h = self.params.hazard;
        let weight = 1.0 / GRID as f64;
        // Sums in a common scale: max of ln W.
        let top = self.ln_sr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let expected = if base.is_proper() {
            x * base.shape / base.rate
        } else {
            0.0
        };
        if top == f64::NEG_INFINITY {
            return FleetUpdate {
                p_regression: 0.0,
                p_changed: 0.0,
                ln_odds_regression: f64::NEG_INFINITY,
                expected,
                onset_bins: 0,
            };
        }
        let (mut all, mut above) = (0.0, 0.0);
        for (&rho, &ln_w) in HR_GRID.iter().zip(&self.ln_sr) {
            let w = (ln_w - top).exp() * weight;
            all += w;
            if rho > self.params.threshold {
                above += w;
            }
        }
        // P = H S+ / (1 + H S), with S = e^top * all: divide through by H e^top.
        let scale = -(h.ln() + top);
        let denominator = scale.exp() + all;
        let p_regression = (above / denominator).clamp(0.0, 1.0);
        let p_changed = (all / denominator).clamp(0.0, 1.0);
        // ln (P / (1 - P)) = ln H + ln S+ - ln(1 + H (S - S+)), in logs so that it stays
        // finite where P rounds to 1.
        let ln_h_top = h.ln() + top;
        let ln_odds_regression =
            ln_h_top + above.ln() - ln_one_plus_exp(ln_h_top + (all - above).ln());
        FleetUpdate {
            p_regression,
            p_changed,
            ln_odds_regression,
            expected,
            onset_bins: self.best_segment().bins,
        }
    }

    /// The most probable segment of the most probable ratio above the threshold.
    fn best_segment(&self) -> Segment {
        let best = HR_GRID
            .iter()
            .enumerate()
            .filter(|(_, rho)| **rho > self.params.threshold)
            .max_by(|a, b| self.ln_sr[a.0].total_cmp(&self.ln_sr[b.0]))
            .map(|(i, _)| i)
            .expect("validate keeps a ratio above the threshold");
        self.segments[best]
    }

    /// Hazard ratio median and 95% CrI of the onset estimate's segment against the baseline now
    /// (`fleet` updated with the key's old bins); `None` with no segment. Three Beta quantiles:
    /// ask only where they are shown.
    pub fn hazard_ratio(&self, fleet: Baseline) -> Option<HazardRatioSummary> {
        hazard_ratio_summary(
            self.posterior_baseline(fleet),
            &self.best_segment(),
            self.old_events,
            self.old_exposure,
        )
    }
}

/// ln(1 + e^v), exact at both ends.
fn ln_one_plus_exp(v: f64) -> f64 {
    if v == f64::NEG_INFINITY {
        0.0
    } else if v > 0.0 {
        v + (-v).exp().ln_1p()
    } else {
        v.exp().ln_1p()
    }
}

/// The hazard ratio of the segment against the baseline: the rate after the onset has one
/// pseudo-event at the baseline mean plus the segment's events and exposure.
fn hazard_ratio_summary(
    base: Baseline,
    seg: &Segment,
    old_events: u64,
    old_exposure: f64,
) -> Option<HazardRatioSummary> {
    if seg.bins == 0 || !base.is_proper() {
        return None;
    }
    let hr = HazardRatio::new(
        base.after_onset(u64::from(seg.events), seg.exposure),
        base.rate(),
    )?;
    Some(HazardRatioSummary {
        median: hr.quantile(0.5),
        low: hr.quantile(0.025),
        high: hr.quantile(0.975),
        events_after: u64::from(seg.events),
        exposure_after: seg.exposure,
        events_before: old_events,
        exposure_before: old_exposure,
    })
}

/// How a detector's state is written ([`FleetDetector::encode_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateForm {
    /// Counts in fixed little-endian width, every exposure an f64: what safetel wrote first, and
    /// what snapshots digest so that every release's compare.
    Fixed,
    /// Counts as unsigned varints, every exposure an f64.
    Varint,
    /// As [`StateForm::Varint`], and a guarded bin's exposure that is a whole number of
    /// milliseconds in hours (what a vehicle series sees: [`EXPOSURE_UNITS_PER_HOUR`]) as that
    /// number, a varint (~4 bytes instead of 8), exactly.
    Compact,
}

/// Vehicle series measure exposure in hours from whole milliseconds (`ms / 3,600,000`).
pub const EXPOSURE_UNITS_PER_HOUR: f64 = 3_600_000.0;

/// `exposure` as whole milliseconds, if it is exactly `ms / 3,600,000` for some `ms` (a cohort
/// series' expected counts are not).
pub(super) fn whole_units(exposure: f64) -> Option<u64> {
    let units = (exposure * EXPOSURE_UNITS_PER_HOUR).round();
    if !(0.0..=(1u64 << 53) as f64).contains(&units) {
        return None;
    }
    let units = units as u64;
    ((units as f64 / EXPOSURE_UNITS_PER_HOUR).to_bits() == exposure.to_bits()).then_some(units)
}

impl FleetDetector {
    /// Appends the state (not the parameters) in a compact binary form
    /// ([`StateForm::Compact`]): counts as unsigned varints (most are small), the guarded bins'
    /// exposures as whole milliseconds where they are, the other exposures and the log weights
    /// as they are (f64, exact).
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_as(StateForm::Compact, out);
    }

    /// [`FleetDetector::encode`] in any of the forms safetel has written.
    pub fn encode_as(&self, form: StateForm, out: &mut Vec<u8>) {
        let fixed = form == StateForm::Fixed;
        let u64_to = |n: u64, out: &mut Vec<u8>| match fixed {
            true => out.extend_from_slice(&n.to_le_bytes()),
            false => put_varint(n, out),
        };
        let u32_to = |n: u32, out: &mut Vec<u8>| match fixed {
            true => out.extend_from_slice(&n.to_le_bytes()),
            false => put_varint(u64::from(n), out),
        };
        u64_to(self.old_events, out);
        out.extend_from_slice(&self.old_exposure.to_le_bytes());
        u64_to(self.old_bins, out);
        match form {
            StateForm::Compact => self.guard.encode(out),
            StateForm::Fixed | StateForm::Varint => {
                u32_to(self.guard.len() as u32, out);
                for (events, exposure) in self.guard.iter() {
                    u64_to(u64::from(events), out);
                    out.extend_from_slice(&exposure.to_le_bytes());
                }
            }
        }
        for (ln_w, seg) in self.ln_sr.iter().zip(&self.segments) {
            out.extend_from_slice(&ln_w.to_le_bytes());
            out.extend_from_slice(&seg.ln_max.to_le_bytes());
            u32_to(seg.bins, out);
            u64_to(u64::from(seg.events), out);
            out.extend_from_slice(&seg.exposure.to_le_bytes());
        }
    }

    /// Reads what [`FleetDetector::encode_as`] wrote in `form` from the front of `bytes`;
    /// returns the rest. With a shorter guard than the state has, the oldest guarded bins enter
    /// the baseline.
    pub fn decode(
        params: FleetRelativeParams,
        bytes: &[u8],
        form: StateForm,
    ) -> Result<(FleetDetector, &[u8]), StateDecodeError> {
        let fixed = form == StateForm::Fixed;
        let mut d = FleetDetector::new(params).map_err(|_| StateDecodeError("parameters"))?;
        let mut r = StateReader(bytes);
        let u64_of = |r: &mut StateReader<'_>| match fixed {
            true => r.take().map(u64::from_le_bytes),
            false => r.varint(),
        };
        let u32_of = |r: &mut StateReader<'_>| match fixed {
            true => r.take().map(u32::from_le_bytes),
            false => u32::try_from(r.varint()?).map_err(|_| StateDecodeError("count")),
        };
        d.old_events = u64_of(&mut r)?;
        d.old_exposure = f64::from_le_bytes(r.take()?);
        d.old_bins = u64_of(&mut r)?;
        d.guard = match form {
            StateForm::Compact => GuardWindow::decode(&mut r)?,
            StateForm::Fixed | StateForm::Varint => {
                let guarded = u32_of(&mut r)?;
                if guarded as usize > r.0.len() {
                    return Err(StateDecodeError("guard count"));
                }
                let mut window = GuardWindow::new();
                for _ in 0..guarded {
                    let events = narrow(u64_of(&mut r)?);
                    window.push_back(events, f64::from_le_bytes(r.take()?));
                }
                window
            }
        };
        for i in 0..GRID {
            d.ln_sr[i] = f64::from_le_bytes(r.take()?);
            d.segments[i] = Segment {
                ln_max: f64::from_le_bytes(r.take()?),
                bins: u32_of(&mut r)?,
                events: narrow(u64_of(&mut r)?),
                exposure: f64::from_le_bytes(r.take()?),
            };
        }
        d.age_guarded_bins();
        Ok((d, r.0))
    }
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads fixed-size fields off the front of encoded state; `.0` is what is left.
pub struct StateReader<'a>(pub &'a [u8]);

impl StateReader<'_> {
    /// An unsigned LEB128 varint ([`put_varint`]).
    pub fn varint(&mut self) -> Result<u64, StateDecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.take::<1>()?;
            if shift == 63 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(StateDecodeError("varint"))
    }

    pub fn take<const N: usize>(&mut self) -> Result<[u8; N], StateDecodeError> {
        let chunk = self.0.get(..N).ok_or(StateDecodeError("ends early"))?;
        self.0 = &self.0[N..];
        Ok(chunk.try_into().expect("N bytes"))
    }
}

/// The fleet's Gamma distribution of rates fitted by moments to keys' (events, exposure):
/// mean mu = sum y / sum x, between-key variance from sum (y - mu x)^2 - mu sum x over sum x^2
/// (Poisson noise removed). The shape is kept within [`MIN_FLEET_SHAPE`, `MAX_FLEET_SHAPE`]:
/// with few events the variance estimate is noise, and no spread at all would make every key's
/// own history irrelevant. `None` without events or exposure.
pub fn fit_fleet_baseline(keys: impl Iterator<Item = (u64, f64)>) -> Option<Baseline> {
    let (mut n, mut sy, mut sx, mut sxx, mut syy, mut sxy) = (0usize, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (y, x) in keys {
        if !(x.is_finite() && x > 0.0) {
            continue;
        }
        let y = y as f64;
        n += 1;
        sy += y;
        sx += x;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
    }
    if n == 0 || sy <= 0.0 || sx <= 0.0 {
        return None;
    }
    let mu = sy / sx;
    // sum (y - mu x)^2 = syy - 2 mu sxy + mu^2 sxx
    let spread = (syy - 2.0 * mu * sxy + mu * mu * sxx - mu * sx) / sxx;
    let shape = if spread > 0.0 {
        (mu * mu / spread).clamp(MIN_FLEET_SHAPE, MAX_FLEET_SHAPE)
    } else {
        MAX_FLEET_SHAPE
    };
    Some(Baseline {
        shape,
        rate: shape / mu,
    })
}

/// Bounds of the fitted fleet shape: from a coefficient of variation of 1.4 down to 0.14.
pub const MIN_FLEET_SHAPE: f64 = 0.5;
pub const MAX_FLEET_SHAPE: f64 = 50.0;

#[cfg(test)]
#[path = "fleet_relative_tests.rs"]
mod tests;
