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

/// One bin as the detector remembers it. Exposure is kept at `f32` precision (7 significant
/// digits: a second in 100 hours), which halves the state; the detector rounds every input to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct HistoryBin {
    events: u32,
    exposure: f32,
}

/// The detector of one series (key and hazard class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    params: DetectorParams,
    /// The most recent bins, oldest first: enough for the longest run and its baseline window.
    history: VecDeque<HistoryBin>,
    /// ln P(r_t = r | y_1..t) at index r - 1 (dense; pruned run lengths hold -inf). A run at the
    /// cap stands for "at least `max_run_length` bins" and keeps the last `max_run_length` bins.
    runs: Vec<f64>,
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HazardRatioSummary {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    pub events_after: u64,
    pub exposure_after: f64,
    pub events_before: u64,
    pub exposure_before: f64,
}

/// ln NB(y | a, b, e) + ln y!, i.e. without the term that is the same for every run length.
///
/// ln Gamma(a + y) - ln Gamma(a) is a product of y factors for small y (rare events: mostly 0),
/// so the common case costs one logarithm instead of three log-gammas.
fn ln_negative_binomial_unscaled(y: u64, a: f64, b: f64, e: f64) -> f64 {
    let rising = match y {
        0 => 0.0,
        1..=8 => {
            let mut product = a;
            for k in 1..y {
                product *= a + k as f64;
            }
            product.ln()
        }
        _ => ln_gamma(a + y as f64) - ln_gamma(a),
    };
    let decay = -a * (e / b).ln_1p();
    if y == 0 {
        rising + decay
    } else {
        rising + decay + y as f64 * (e / (b + e)).ln()
    }
}

fn ln_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn ln_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
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

    /// Replaces the Gamma prior (from a refit) for every bin from now on; the run-length
    /// posterior so far stays as it was computed.
    pub fn set_prior(&mut self, a0: f64, b0: f64) -> Result<(), DetectorParamsError> {
        let params = DetectorParams {
            a0,
            b0,
            ..self.params
        };
        params.validate()?;
        self.params = params;
        Ok(())
    }

    /// Bytes of memory this detector holds (struct, bin history, run lengths).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.history.capacity() * std::mem::size_of::<HistoryBin>()
            + self.runs.capacity() * std::mem::size_of::<f64>()
    }

    /// The run-length posterior: (run length, probability) for the live run lengths, increasing.
    pub fn run_length_posterior(&self) -> Vec<(usize, f64)> {
        self.live_runs().map(|(r, lp)| (r, lp.exp())).collect()
    }

    fn live_runs(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.runs
            .iter()
            .enumerate()
            .filter(|(_, lp)| **lp > f64::NEG_INFINITY)
            .map(|(i, lp)| (i + 1, *lp))
    }

    /// Sums of the last `k` bins of history, for k = 0..=len: (events, exposure).
    fn suffix_sums(&self) -> Vec<(u64, f64)> {
        let mut sums = Vec::with_capacity(self.history.len() + 1);
        let (mut y, mut e) = (0u64, 0.0f64);
        sums.push((y, e));
        for bin in self.history.iter().rev() {
            y += u64::from(bin.events);
            e += f64::from(bin.exposure);
            sums.push((y, e));
        }
        sums
    }

    /// Adds the next bin and returns the updated conclusions. Counts above `u32::MAX` per bin are
    /// kept as `u32::MAX`; negative or non-finite exposure counts as none.
    pub fn update(&mut self, events: u64, exposure_hours: f64) -> BinUpdate {
        let p = self.params;
        let events = events.min(u64::from(u32::MAX));
        let stored = if exposure_hours.is_finite() {
            exposure_hours.max(0.0) as f32
        } else {
            0.0
        };
        let e = f64::from(stored).max(MIN_EXPOSURE_HOURS);
        let mut next: Vec<f64> =
            Vec::with_capacity((self.runs.len() + 1).min(p.max_run_length + 1));
        if self.runs.is_empty() {
            next.push(0.0);
        } else {
            let evidence = ln_sum_exp(self.runs.iter().copied());
            let change =
                evidence + p.hazard.ln() + ln_negative_binomial_unscaled(events, p.a0, p.b0, e);
            next.push(change);
            let stay = (1.0 - p.hazard).ln();
            let (mut y, mut exposure) = (0u64, 0.0f64);
            let mut bins = self.history.iter().rev();
            for &lp in &self.runs {
                // Run r (index r - 1) covers the last r bins of the history.
                if let Some(bin) = bins.next() {
                    y += u64::from(bin.events);
                    exposure += f64::from(bin.exposure);
                }
                next.push(if lp == f64::NEG_INFINITY {
                    lp
                } else {
                    lp + stay
                        + ln_negative_binomial_unscaled(events, p.a0 + y as f64, p.b0 + exposure, e)
                });
            }
            // The run that would pass the cap stays at it ("at least max_run_length bins").
            if next.len() > p.max_run_length {
                let beyond = next.pop().expect("longer than the cap");
                let last = next.last_mut().expect("cap is at least 1");
                *last = ln_add_exp(*last, beyond);
            }
        }
        self.history.push_back(HistoryBin {
            events: events as u32,
            exposure: stored,
        });
        while self.history.len() > p.max_run_length + p.window_bins {
            self.history.pop_front();
        }
        self.runs = next;
        self.normalise();
        if p.prune_below > 0.0 {
            let floor = p.prune_below.ln();
            for lp in self.runs.iter_mut() {
                if *lp < floor {
                    *lp = f64::NEG_INFINITY;
                }
            }
            while self.runs.last() == Some(&f64::NEG_INFINITY) {
                self.runs.pop();
            }
            self.normalise();
        }
        self.conclude()
    }

    fn normalise(&mut self) {
        let total = ln_sum_exp(self.runs.iter().copied());
        for lp in self.runs.iter_mut() {
            *lp -= total;
        }
    }

    fn map_run_length(&self) -> usize {
        self.live_runs()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(1, |(r, _)| r)
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
            .live_runs()
            .filter_map(|(r, lp)| {
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

/// The detector's state could not be read back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("detector state is damaged: {0}")]
pub struct StateDecodeError(pub &'static str);

impl Detector {
    /// Appends the state (history and run lengths; not the parameters) in a compact binary form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.history.len() as u32).to_le_bytes());
        for bin in &self.history {
            out.extend_from_slice(&bin.events.to_le_bytes());
            out.extend_from_slice(&bin.exposure.to_le_bytes());
        }
        out.extend_from_slice(&(self.runs.len() as u32).to_le_bytes());
        for lp in &self.runs {
            out.extend_from_slice(&lp.to_le_bytes());
        }
    }

    /// Reads what [`Detector::encode`] wrote, from the front of `bytes`; returns the bytes left.
    /// With parameters that keep less history or shorter runs than the state has, the oldest
    /// bins are dropped and the longest runs merged into the cap.
    pub fn decode(
        params: DetectorParams,
        bytes: &[u8],
    ) -> Result<(Detector, &[u8]), StateDecodeError> {
        let mut detector = Detector::new(params).map_err(|_| StateDecodeError("parameters"))?;
        let (bins, mut rest) = take_u32(bytes)?;
        for _ in 0..bins {
            let (events, r) = take_u32(rest)?;
            let (exposure, r) = take_u32(r)?;
            rest = r;
            detector.history.push_back(HistoryBin {
                events,
                exposure: f32::from_bits(exposure),
            });
        }
        let (runs, mut rest) = take_u32(rest)?;
        for _ in 0..runs {
            let chunk = rest.get(..8).ok_or(StateDecodeError("run lengths"))?;
            detector
                .runs
                .push(f64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            rest = &rest[8..];
        }
        while detector.history.len() > params.max_run_length + params.window_bins {
            detector.history.pop_front();
        }
        while detector.runs.len() > params.max_run_length {
            let beyond = detector.runs.pop().expect("longer than the cap");
            let last = detector.runs.last_mut().expect("cap is at least 1");
            *last = ln_add_exp(*last, beyond);
        }
        Ok((detector, rest))
    }
}

fn take_u32(bytes: &[u8]) -> Result<(u32, &[u8]), StateDecodeError> {
    let chunk = bytes.get(..4).ok_or(StateDecodeError("ends early"))?;
    Ok((
        u32::from_le_bytes(chunk.try_into().expect("4 bytes")),
        &bytes[4..],
    ))
}
