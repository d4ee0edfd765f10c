//! The run-length posterior (Adams & MacKay 2007) with a Poisson-Gamma model per segment.
//!
//! Run length r_t counts the bins of the current segment including bin t (r_1 = 1). Within a
//! segment y_t ~ Poisson(lambda e_t), lambda ~ Gamma(a0, b0), so a bin's predictive given the run's
//! sums (Y, E) is negative binomial:
//! NB(y | a, b, e) = Gamma(a + y) / (Gamma(a) y!) (b / (b + e))^a (e / (b + e))^y, a = a0 + Y, b = b0 + E.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use statrs::function::gamma::ln_gamma;

use super::hazard_ratio::{GammaRate, HazardRatio};
use super::{DetectorParams, DetectorParamsError};

/// Exposure below this counts as this much, so that a bin with events but (rounded) no exposure
/// stays a finite, if unlikely, observation.
const MIN_EXPOSURE_HOURS: f64 = 1e-9;

/// The detector of one series (key and hazard class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    params: DetectorParams,
    /// (events, exposure hours) of the most recent bins, oldest first.
    history: VecDeque<(u64, f64)>,
    /// (run length, log posterior probability), by increasing run length.
    runs: Vec<(usize, f64)>,
}

/// What the detector concludes after a bin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinUpdate {
    /// P(hazard ratio > threshold), mixed over run lengths.
    pub p_regression: f64,
    pub map_run_length: usize,
    /// At the MAP run length, where it has a baseline.
    pub hazard_ratio: Option<HazardRatioSummary>,
}

/// Median and 95% credible interval of the hazard ratio, with the sums behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HazardRatioSummary {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    pub events_after: u64,
    pub exposure_after: f64,
    pub events_before: u64,
    pub exposure_before: f64,
}

/// ln NB(y | a, b, e).
fn ln_negative_binomial(y: u64, a: f64, b: f64, e: f64) -> f64 {
    let y = y as f64;
    ln_gamma(a + y) - ln_gamma(a) - ln_gamma(y + 1.0)
        + a * (b / (b + e)).ln()
        + y * (e / (b + e)).ln()
}

fn ln_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

impl Detector {
    pub fn new(params: DetectorParams) -> Result<Detector, DetectorParamsError> {
        params.validate()?;
        Ok(Detector {
            params,
            history: VecDeque::new(),
            runs: Vec::new(),
        })
    }

    pub fn params(&self) -> &DetectorParams {
        &self.params
    }

    /// Bytes of memory this detector holds (struct, bin history, run lengths).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.history.capacity() * std::mem::size_of::<(u64, f64)>()
            + self.runs.capacity() * std::mem::size_of::<(usize, f64)>()
    }

    /// The run-length posterior: (run length, probability), by increasing run length.
    pub fn run_length_posterior(&self) -> Vec<(usize, f64)> {
        self.runs.iter().map(|(r, lp)| (*r, lp.exp())).collect()
    }

    /// Sums of the last `k` bins of history, for k = 0..=len: (events, exposure).
    fn suffix_sums(&self) -> Vec<(u64, f64)> {
        let mut sums = Vec::with_capacity(self.history.len() + 1);
        let (mut y, mut e) = (0u64, 0.0f64);
        sums.push((y, e));
        for (events, exposure) in self.history.iter().rev() {
            y += events;
            e += exposure;
            sums.push((y, e));
        }
        sums
    }

    /// Adds the next bin and returns the updated conclusions.
    pub fn update(&mut self, events: u64, exposure_hours: f64) -> BinUpdate {
        let p = self.params;
        let e = exposure_hours.max(MIN_EXPOSURE_HOURS);
        let mut next: Vec<(usize, f64)> = Vec::with_capacity(self.runs.len() + 1);
        if self.runs.is_empty() {
            next.push((1, 0.0));
        } else {
            let sums = self.suffix_sums();
            let evidence = ln_sum_exp(self.runs.iter().map(|(_, lp)| *lp));
            let change = evidence + p.hazard.ln() + ln_negative_binomial(events, p.a0, p.b0, e);
            next.push((1, change));
            let stay = (1.0 - p.hazard).ln();
            for &(r, lp) in &self.runs {
                let (y, exposure) = sums[r.min(sums.len() - 1)];
                let growth =
                    lp + stay + ln_negative_binomial(events, p.a0 + y as f64, p.b0 + exposure, e);
                next.push((r + 1, growth));
            }
        }
        self.history.push_back((events, exposure_hours.max(0.0)));
        while self.history.len() > p.max_run_length + p.window_bins {
            self.history.pop_front();
        }
        self.runs = next;
        self.normalise();
        if p.prune_below > 0.0 || self.runs.len() > p.max_run_length {
            let floor = p.prune_below.ln();
            let map = self.map_run_length();
            self.runs
                .retain(|(r, lp)| *r == map || (*lp >= floor && *r <= p.max_run_length));
            self.normalise();
        }
        self.conclude()
    }

    fn normalise(&mut self) {
        let total = ln_sum_exp(self.runs.iter().map(|(_, lp)| *lp));
        for (_, lp) in self.runs.iter_mut() {
            *lp -= total;
        }
    }

    fn map_run_length(&self) -> usize {
        self.runs
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(1, |(r, _)| *r)
    }

    /// The hazard ratio of a run of length `r` (ending now) against the W bins before it, with the
    /// sums behind it. Quantiles are left NaN: they are dear and needed at the MAP run only.
    fn hazard_ratio(
        &self,
        sums: &[(u64, f64)],
        r: usize,
    ) -> Option<(HazardRatio, HazardRatioSummary)> {
        let p = &self.params;
        let last = sums.len() - 1;
        let (y_cur, e_cur) = sums[r.min(last)];
        let (y_to, e_to) = sums[(r + p.window_bins).min(last)];
        let (y_base, e_base) = (y_to - y_cur, e_to - e_cur);
        if r >= last || e_base <= 0.0 {
            return None;
        }
        let current = GammaRate {
            shape: p.a0 + y_cur as f64,
            rate: p.b0 + e_cur,
        };
        let baseline = GammaRate {
            shape: p.a0 + y_base as f64,
            rate: p.b0 + e_base,
        };
        let hr = HazardRatio::new(current, baseline)?;
        let summary = HazardRatioSummary {
            median: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
            events_after: y_cur,
            exposure_after: e_cur,
            events_before: y_base,
            exposure_before: e_base,
        };
        Some((hr, summary))
    }

    fn conclude(&self) -> BinUpdate {
        let sums = self.suffix_sums();
        let threshold = self.params.threshold;
        let p_regression = self
            .runs
            .iter()
            .filter_map(|&(r, lp)| {
                let (hr, _) = self.hazard_ratio(&sums, r)?;
                Some(lp.exp() * hr.prob_above(threshold))
            })
            .sum::<f64>()
            .clamp(0.0, 1.0);
        let map_run_length = self.map_run_length();
        let hazard_ratio = self
            .hazard_ratio(&sums, map_run_length)
            .map(|(hr, summary)| HazardRatioSummary {
                median: hr.quantile(0.5),
                low: hr.quantile(0.025),
                high: hr.quantile(0.975),
                ..summary
            });
        BinUpdate {
            p_regression,
            map_run_length,
            hazard_ratio,
        }
    }
}
