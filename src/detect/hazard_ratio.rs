//! The posterior of the hazard ratio lambda1 / lambda0 of two independent Gamma rates.
//!
//! With lambda1 ~ Gamma(a1, b1) and lambda0 ~ Gamma(a0, b0) (shape, rate), G1 = b1 lambda1 and
//! G0 = b0 lambda0 are standard Gammas and X = G1 / (G1 + G0) ~ Beta(a1, a0). Then
//! lambda1 / lambda0 = (b0 / b1) X / (1 - X), so with k = c b1 / b0,
//! P(lambda1 / lambda0 > c) = P(X > k / (1 + k)) and the q-quantile is (b0 / b1) x_q / (1 - x_q).

use statrs::distribution::{Beta, ContinuousCDF};

/// A Gamma posterior of a rate per exposure hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaRate {
    pub shape: f64,
    pub rate: f64,
}

impl GammaRate {
    /// The posterior mean rate per exposure hour.
    pub fn mean(&self) -> f64 {
        self.shape / self.rate
    }

    /// The q-quantile of the rate, `None` when the posterior is improper.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let gamma = statrs::distribution::Gamma::new(self.shape, self.rate).ok()?;
        Some(gamma.inverse_cdf(q.clamp(0.0, 1.0)))
    }
}

/// The hazard ratio of `current` over `baseline`.
#[derive(Debug, Clone, Copy)]
pub struct HazardRatio {
    scale: f64,
    beta: Beta,
}

impl HazardRatio {
    /// `None` when either posterior is improper (shape or rate not positive).
    pub fn new(current: GammaRate, baseline: GammaRate) -> Option<HazardRatio> {
        let proper = |g: GammaRate| {
            g.shape > 0.0 && g.rate > 0.0 && g.shape.is_finite() && g.rate.is_finite()
        };
        if !(proper(current) && proper(baseline)) {
            return None;
        }
        let beta = Beta::new(current.shape, baseline.shape).ok()?;
        Some(HazardRatio {
            scale: baseline.rate / current.rate,
            beta,
        })
    }

    /// P(lambda1 / lambda0 > c).
    pub fn prob_above(&self, c: f64) -> f64 {
        let k = c / self.scale;
        self.beta.sf(k / (1.0 + k))
    }

    /// The q-quantile of lambda1 / lambda0.
    pub fn quantile(&self, q: f64) -> f64 {
        let x = self.beta.inverse_cdf(q.clamp(0.0, 1.0));
        self.scale * x / (1.0 - x)
    }
}
