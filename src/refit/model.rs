//! The Weibull survival model with vehicle random effects (DESIGN §5) as a log density with its
//! gradient, written out by hand.
//!
//! Data: intervals of exposure hours t_i between consecutive critical events of vehicle v(i),
//! d_i = 1 if the interval ended in an event, 0 if censored. Model:
//! t_i ~ Weibull(alpha, lambda_v), log lambda_v = mu + sigma z_v, z_v ~ Normal(0, 1);
//! log alpha ~ Normal(0, 1); mu ~ Normal(m0, 2) with m0 = log(median duration);
//! sigma ~ HalfNormal(1), sampled as s = log sigma (with its Jacobian).
//! Log-likelihood: sum_i d_i (log alpha - eta_i + (alpha - 1)(log t_i - eta_i)) - (t_i / lambda_i)^alpha.
//!
//! Position vector: [log alpha, mu, log sigma, z_1 .. z_V]. Per vehicle the likelihood needs
//! only D_v = sum d_i, L_v = sum d_i log t_i, S_v = sum t_i^alpha and T_v = sum t_i^alpha log t_i,
//! so one evaluation costs one `exp` per interval.

/// Why the data cannot be modelled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    #[error("no intervals")]
    Empty,
    #[error(
        "interval {index} of vehicle `{vehicle}`: duration {duration} is not a positive number of hours"
    )]
    BadDuration {
        index: usize,
        vehicle: String,
        duration: f64,
    },
}

/// Intervals grouped by vehicle.
#[derive(Debug, Clone)]
pub struct SurvivalData {
    pub vehicles: Vec<String>,
    /// Per vehicle: (log duration, event) of each interval.
    intervals: Vec<Vec<(f64, bool)>>,
    /// Per vehicle: sum of event indicators and of d_i log t_i.
    events: Vec<f64>,
    event_log_time: Vec<f64>,
    /// log of the median duration: the centre of mu's prior.
    pub log_median_duration: f64,
}

impl SurvivalData {
    /// From (vehicle, duration hours, event) rows, in any order.
    pub fn new(rows: &[(String, f64, bool)]) -> Result<SurvivalData, DataError> {
        if rows.is_empty() {
            return Err(DataError::Empty);
        }
        let mut index: std::collections::BTreeMap<&str, usize> = Default::default();
        for (v, _, _) in rows {
            let next = index.len();
            index.entry(v.as_str()).or_insert(next);
        }
        let vehicles: Vec<String> = {
            let mut v: Vec<(&str, usize)> = index.iter().map(|(k, i)| (*k, *i)).collect();
            v.sort_by_key(|(_, i)| *i);
            v.into_iter().map(|(k, _)| k.to_string()).collect()
        };
        let mut intervals = vec![Vec::new(); vehicles.len()];
        let mut durations = Vec::with_capacity(rows.len());
        for (i, (v, t, d)) in rows.iter().enumerate() {
            if !(t.is_finite() && *t > 0.0) {
                return Err(DataError::BadDuration {
                    index: i,
                    vehicle: v.clone(),
                    duration: *t,
                });
            }
            intervals[index[v.as_str()]].push((t.ln(), *d));
            durations.push(*t);
        }
        durations.sort_by(f64::total_cmp);
        let median = super::diagnostics::quantile_sorted(&durations, 0.5);
        let events = intervals
            .iter()
            .map(|iv| iv.iter().filter(|(_, d)| *d).count() as f64)
            .collect();
        let event_log_time = intervals
            .iter()
            .map(|iv| iv.iter().filter(|(_, d)| *d).map(|(lt, _)| lt).sum())
            .collect();
        Ok(SurvivalData {
            vehicles,
            intervals,
            events,
            event_log_time,
            log_median_duration: median.ln(),
        })
    }

    pub fn vehicle_count(&self) -> usize {
        self.vehicles.len()
    }

    pub fn interval_count(&self) -> usize {
        self.intervals.iter().map(Vec::len).sum()
    }

    /// Per vehicle: (total exposure hours, events).
    pub fn totals(&self) -> Vec<(f64, u64)> {
        self.intervals
            .iter()
            .map(|iv| {
                (
                    iv.iter().map(|(lt, _)| lt.exp()).sum(),
                    iv.iter().filter(|(_, d)| *d).count() as u64,
                )
            })
            .collect()
    }

    /// Dimension of the position vector.
    pub fn dim(&self) -> usize {
        3 + self.vehicles.len()
    }
}

/// The posterior's log density (up to a constant) and its gradient at `position`.
pub fn log_density(data: &SurvivalData, position: &[f64], gradient: &mut [f64]) -> f64 {
    let (log_alpha, mu, log_sigma) = (position[0], position[1], position[2]);
    let (alpha, sigma) = (log_alpha.exp(), log_sigma.exp());
    let m0 = data.log_median_duration;
    // Priors: log alpha ~ N(0, 1), mu ~ N(m0, 2), sigma ~ HalfNormal(1) on log sigma.
    let mut lp =
        -0.5 * log_alpha * log_alpha - (mu - m0).powi(2) / 8.0 - 0.5 * sigma * sigma + log_sigma;
    let mut d_log_alpha = -log_alpha;
    let mut d_mu = -(mu - m0) / 4.0;
    let mut d_log_sigma = -sigma * sigma + 1.0;
    let mut d_alpha = 0.0;
    for (v, intervals) in data.intervals.iter().enumerate() {
        let z = position[3 + v];
        let eta = mu + sigma * z;
        let (mut s, mut t) = (0.0, 0.0);
        for &(log_t, _) in intervals {
            let w = (alpha * log_t).exp();
            s += w;
            t += w * log_t;
        }
        let (d, l) = (data.events[v], data.event_log_time[v]);
        let scaled = (-alpha * eta).exp();
        lp += d * (log_alpha - alpha * eta) + (alpha - 1.0) * l - scaled * s - 0.5 * z * z;
        let d_eta = alpha * (scaled * s - d);
        d_log_alpha += d;
        d_alpha += -d * eta + l - scaled * (t - eta * s);
        d_mu += d_eta;
        d_log_sigma += d_eta * sigma * z;
        gradient[3 + v] = d_eta * sigma - z;
    }
    gradient[0] = d_log_alpha + alpha * d_alpha;
    gradient[1] = d_mu;
    gradient[2] = d_log_sigma;
    lp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> SurvivalData {
        let rows: Vec<(String, f64, bool)> = [
            ("a", 120.0, true),
            ("a", 80.5, true),
            ("a", 33.0, false),
            ("b", 410.0, true),
            ("b", 12.0, false),
            ("c", 250.0, false),
        ]
        .iter()
        .map(|(v, t, d)| (v.to_string(), *t, *d))
        .collect();
        SurvivalData::new(&rows).unwrap()
    }

    #[test]
    fn gradient_matches_central_finite_differences() {
        // Central differences with h = 1e-5 err by O(h^2) ~ 1e-10 times the third derivative;
        // 1e-6 relative (or absolute, near zero) leaves room for rounding.
        let data = data();
        for position in [
            vec![0.2, 4.5, -0.3, 0.5, -1.2, 0.8],
            vec![-0.4, 5.5, 0.4, -0.1, 0.3, 1.9],
        ] {
            let mut grad = vec![0.0; data.dim()];
            log_density(&data, &position, &mut grad);
            for k in 0..data.dim() {
                let h = 1e-5;
                let (mut up, mut down) = (position.clone(), position.clone());
                up[k] += h;
                down[k] -= h;
                let mut scratch = vec![0.0; data.dim()];
                let numeric = (log_density(&data, &up, &mut scratch)
                    - log_density(&data, &down, &mut scratch))
                    / (2.0 * h);
                let scale = numeric.abs().max(1.0);
                assert!(
                    (grad[k] - numeric).abs() / scale < 1e-6,
                    "component {k}: analytic {} vs numeric {numeric}",
                    grad[k]
                );
            }
        }
    }

    #[test]
    fn log_density_matches_the_textbook_weibull_likelihood() {
        // The per-vehicle sums must give the sum over intervals of the log density (events) and
        // log survival (censored) of Weibull(alpha, lambda), plus the priors.
        let data = data();
        let position: [f64; 6] = [0.1, 4.8, -0.2, 0.3, -0.7, 1.1];
        let (alpha, mu, sigma) = (position[0].exp(), position[1], position[2].exp());
        let rows: [(usize, f64, bool); 6] = [
            (0, 120.0, true),
            (0, 80.5, true),
            (0, 33.0, false),
            (1, 410.0, true),
            (1, 12.0, false),
            (2, 250.0, false),
        ];
        let mut expected = -0.5 * position[0] * position[0]
            - (mu - data.log_median_duration).powi(2) / 8.0
            - 0.5 * sigma * sigma
            + position[2];
        for z in &position[3..] {
            expected -= 0.5 * z * z;
        }
        for (v, t, event) in rows {
            let lambda = (mu + sigma * position[3 + v]).exp();
            let survival = -(t / lambda).powf(alpha);
            let hazard = (alpha / lambda * (t / lambda).powf(alpha - 1.0)).ln();
            expected += survival + if event { hazard } else { 0.0 };
        }
        let mut grad = vec![0.0; data.dim()];
        let ours = log_density(&data, &position, &mut grad);
        assert!((ours - expected).abs() < 1e-9, "{ours} vs {expected}");
    }

    #[test]
    fn bad_durations_are_named() {
        let err = SurvivalData::new(&[("x".into(), -1.0, true)]).unwrap_err();
        assert!(err.to_string().contains("vehicle `x`"), "{err}");
        assert_eq!(SurvivalData::new(&[]).unwrap_err(), DataError::Empty);
    }
}
