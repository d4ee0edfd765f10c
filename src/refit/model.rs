//! The Weibull survival model with vehicle random effects (docs/design.md §5) as a log density with
//! its gradient, written out by hand.
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
    /// Every log duration, vehicle after vehicle (contiguous for the gradient's inner loop)...
    log_times: Vec<f64>,
    /// ...vehicle v's being `log_times[starts[v]..starts[v + 1]]`.
    starts: Vec<usize>,
    /// Per vehicle: sum of event indicators and of d_i log t_i, and total exposure hours.
    events: Vec<f64>,
    event_log_time: Vec<f64>,
    exposure: Vec<f64>,
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
        // Per vehicle: (log duration, event) of each interval, for the arrays below.
        let mut intervals: Vec<Vec<(f64, bool)>> = vec![Vec::new(); vehicles.len()];
        let mut exposure = vec![0.0; vehicles.len()];
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
            exposure[index[v.as_str()]] += t;
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
        let mut log_times = Vec::with_capacity(rows.len());
        let mut starts = vec![0];
        for iv in &intervals {
            log_times.extend(iv.iter().map(|(lt, _)| *lt));
            starts.push(log_times.len());
        }
        Ok(SurvivalData {
            vehicles,
            log_times,
            starts,
            events,
            event_log_time,
            exposure,
            log_median_duration: median.ln(),
        })
    }

    pub fn vehicle_count(&self) -> usize {
        self.vehicles.len()
    }

    pub fn interval_count(&self) -> usize {
        self.log_times.len()
    }

    /// Per vehicle: (total exposure hours, events).
    pub fn totals(&self) -> Vec<(f64, u64)> {
        self.exposure
            .iter()
            .zip(&self.events)
            .map(|(e, d)| (*e, *d as u64))
            .collect()
    }

    /// Dimension of the position vector.
    pub fn dim(&self) -> usize {
        3 + self.vehicles.len()
    }
}

/// 1/11! .. 1/0!: the Taylor coefficients of e^r after the leading 1/12!, for Horner's scheme.
const EXP_TAYLOR: [f64; 12] = [
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// e^x for |x| < 700, within 2 ulp of `f64::exp`, without branches or calls so that loops over
/// it vectorise: x = k ln 2 + r with |r| <= ln 2 / 2 (Cody-Waite, two-part ln 2), e^r by its
/// Taylor polynomial to degree 12 (remainder < 2e-16), and 2^k built in the exponent bits. k is
/// rounded with the 1.5 * 2^52 trick, which also leaves it as an integer in the low bits.
/// `FUSED` uses fused multiply-adds: only where the CPU has them (else they are library calls).
#[inline(always)]
fn exp_vectorisable<const FUSED: bool>(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let x = x.clamp(-700.0, 700.0);
    let shifted = x * LOG2E + ROUND;
    let k = shifted - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p: f64 = 1.0 / 479_001_600.0; // 1/12!
    for inverse_factorial in EXP_TAYLOR {
        p = if FUSED {
            p.mul_add(r, inverse_factorial)
        } else {
            p * r + inverse_factorial
        };
    }
    let k_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    f64::from_bits(k_bits.wrapping_add(1023) << 52) * p
}

/// (sum of t^alpha, sum of t^alpha log t) over one vehicle's log durations: with AVX2 and FMA
/// where the CPU has them (checked once, at run time), else the same code for the baseline.
#[inline]
fn power_sums(alpha: f64, log_times: &[f64]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { power_sums_avx2(alpha, log_times) };
    }
    power_sums_lanes::<false>(alpha, log_times)
}

/// Four lanes per instruction: the same reduction and polynomial as [`exp_vectorisable`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn power_sums_avx2(alpha: f64, log_times: &[f64]) -> (f64, f64) {
    use std::arch::x86_64::*;
    let round = _mm256_set1_pd(6_755_399_441_055_744.0);
    let (low, high) = (_mm256_set1_pd(-700.0), _mm256_set1_pd(700.0));
    let (log2e, ln2_hi, ln2_lo) = (
        _mm256_set1_pd(std::f64::consts::LOG2_E),
        _mm256_set1_pd(6.931_471_803_691_238e-1),
        _mm256_set1_pd(1.908_214_929_270_587_7e-10),
    );
    let bias = _mm256_set1_epi64x(1023);
    let a = _mm256_set1_pd(alpha);
    let (mut s, mut t) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let chunks = log_times.chunks_exact(4);
    let rest = chunks.remainder();
    for chunk in chunks {
        // SAFETY: `chunk` holds exactly four f64; unaligned loads are allowed.
        let l = unsafe { _mm256_loadu_pd(chunk.as_ptr()) };
        let x = _mm256_min_pd(_mm256_max_pd(_mm256_mul_pd(a, l), low), high);
        let shifted = _mm256_fmadd_pd(x, log2e, round);
        let k = _mm256_sub_pd(shifted, round);
        let r = _mm256_fnmadd_pd(k, ln2_lo, _mm256_fnmadd_pd(k, ln2_hi, x));
        let mut p = _mm256_set1_pd(1.0 / 479_001_600.0);
        for c in EXP_TAYLOR {
            p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c));
        }
        let k_bits = _mm256_sub_epi64(_mm256_castpd_si256(shifted), _mm256_castpd_si256(round));
        let scale = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_add_epi64(k_bits, bias)));
        let w = _mm256_mul_pd(scale, p);
        s = _mm256_add_pd(s, w);
        t = _mm256_fmadd_pd(w, l, t);
    }
    let (mut s_lanes, mut t_lanes) = ([0.0f64; 4], [0.0f64; 4]);
    // SAFETY: four f64 fit each array.
    unsafe {
        _mm256_storeu_pd(s_lanes.as_mut_ptr(), s);
        _mm256_storeu_pd(t_lanes.as_mut_ptr(), t);
    }
    for (lane, &log_t) in rest.iter().enumerate() {
        let w = exp_vectorisable::<true>(alpha * log_t);
        s_lanes[lane] += w;
        t_lanes[lane] += w * log_t;
    }
    (s_lanes.iter().sum(), t_lanes.iter().sum())
}

/// Four independent accumulators, so that the compiler may keep the lanes in one vector.
#[inline(always)]
fn power_sums_lanes<const FUSED: bool>(alpha: f64, log_times: &[f64]) -> (f64, f64) {
    let (mut s, mut t) = ([0.0f64; 4], [0.0f64; 4]);
    let chunks = log_times.chunks_exact(4);
    let rest = chunks.remainder();
    for chunk in chunks {
        for lane in 0..4 {
            let w = exp_vectorisable::<FUSED>(alpha * chunk[lane]);
            s[lane] += w;
            t[lane] += w * chunk[lane];
        }
    }
    for (lane, &log_t) in rest.iter().enumerate() {
        let w = exp_vectorisable::<FUSED>(alpha * log_t);
        s[lane] += w;
        t[lane] += w * log_t;
    }
    (s.iter().sum(), t.iter().sum())
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
    for v in 0..data.vehicles.len() {
        let z = position[3 + v];
        let eta = mu + sigma * z;
        let (s, t) = power_sums(alpha, &data.log_times[data.starts[v]..data.starts[v + 1]]);
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
    fn the_vectorisable_exp_agrees_with_the_standard_one() {
        // Within 4e-16 relative over the range the model uses (|alpha log t| up to ~60) and
        // beyond; exact at 0.
        let mut worst: f64 = 0.0;
        for i in -200_000..=200_000 {
            let x = f64::from(i) * 3.3e-4 + 1e-7;
            for ours in [exp_vectorisable::<false>(x), exp_vectorisable::<true>(x)] {
                worst = worst.max((ours / x.exp() - 1.0).abs());
            }
        }
        for x in [-690.0f64, -300.5, 250.25, 690.0] {
            worst = worst.max((exp_vectorisable::<false>(x) / x.exp() - 1.0).abs());
        }
        assert!(worst < 4e-16, "worst relative error {worst}");
        assert_eq!(exp_vectorisable::<false>(0.0), 1.0);
        // Both paths of the power sums agree (lanes in the same order).
        let log_times: Vec<f64> = (0..23).map(|i| f64::from(i) * 0.37 - 2.0).collect();
        let (a, b) = (
            power_sums(1.3, &log_times),
            power_sums_lanes::<false>(1.3, &log_times),
        );
        assert!((a.0 / b.0 - 1.0).abs() < 1e-14 && (a.1 / b.1 - 1.0).abs() < 1e-14);
    }

    #[test]
    fn bad_durations_are_named() {
        let err = SurvivalData::new(&[("x".into(), -1.0, true)]).unwrap_err();
        assert!(err.to_string().contains("vehicle `x`"), "{err}");
        assert_eq!(SurvivalData::new(&[]).unwrap_err(), DataError::Empty);
    }
}
