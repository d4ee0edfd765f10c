//! Horvitz-Thompson estimation of a fleet total from the reviewed trips.

/// An estimated total and its (unbiased, Poisson-sampling) variance.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HorvitzThompson {
    pub total: f64,
    pub variance: f64,
}

impl HorvitzThompson {
    pub fn standard_error(&self) -> f64 {
        self.variance.sqrt()
    }
}

/// From (value, inclusion probability) of each reviewed trip: total = sum y / pi, and under
/// independent (Poisson) selection var = sum (1 - pi) y^2 / pi^2.
pub fn ht_estimate(reviewed: impl IntoIterator<Item = (f64, f64)>) -> HorvitzThompson {
    let (mut total, mut variance) = (0.0, 0.0);
    for (y, pi) in reviewed {
        total += y / pi;
        variance += (1.0 - pi) * y * y / (pi * pi);
    }
    HorvitzThompson { total, variance }
}
