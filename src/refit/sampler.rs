//! NUTS over the survival model with `nuts-rs` (diagonal mass matrix adaptation): several
//! chains in parallel threads, each seeded from the run's seed and its index, so a run is
//! reproducible. Collects the draws and what the diagnostics need (divergences, tree-depth hits,
//! Hamiltonian energies).

use std::collections::HashMap;
use std::time::Instant;

use nuts_rs::rand::SeedableRng;
use nuts_rs::rand::rngs::StdRng;
use nuts_rs::{Chain, CpuLogpFunc, CpuMath, DiagNutsSettings, HasDims, LogpError, Settings};

use super::model::{SurvivalData, log_density};

/// How to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerSettings {
    pub chains: usize,
    pub warmup: u64,
    pub draws: u64,
    pub seed: u64,
    pub max_depth: u64,
    /// Step-size adaptation target: higher means smaller steps and fewer divergences in the
    /// narrow neck of hierarchical posteriors.
    pub target_accept: f64,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        SamplerSettings {
            chains: 4,
            warmup: 1000,
            draws: 1000,
            seed: 1,
            max_depth: 10,
            target_accept: 0.9,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("sampler settings: {0}")]
    Settings(String),
    #[error("chain {chain}: {message}")]
    Chain { chain: usize, message: String },
}

/// The draws of every chain and the sampler's own statistics.
#[derive(Debug, Clone)]
pub struct Fit {
    /// draws[parameter][chain][draw], in the model's position order.
    pub draws: Vec<Vec<Vec<f64>>>,
    /// Per chain: Hamiltonian energy of each kept draw.
    pub energy: Vec<Vec<f64>>,
    pub divergences: u64,
    pub max_depth_hits: u64,
    pub sampling_s: f64,
}

/// The model as nuts-rs sees it.
#[derive(Debug)]
struct Density<'a>(&'a SurvivalData);

#[derive(Debug, thiserror::Error)]
#[error("log density is not finite")]
struct NotFinite;

impl LogpError for NotFinite {
    fn is_recoverable(&self) -> bool {
        true
    }
}

impl HasDims for Density<'_> {
    fn dim_sizes(&self) -> HashMap<String, u64> {
        [("position".to_string(), self.0.dim() as u64)]
            .into_iter()
            .collect()
    }
}

impl CpuLogpFunc for Density<'_> {
    type LogpError = NotFinite;
    type ExpandedVector = Vec<f64>;
    type FlowParameters = ();

    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn logp(&mut self, position: &[f64], gradient: &mut [f64]) -> Result<f64, NotFinite> {
        let lp = log_density(self.0, position, gradient);
        if lp.is_finite() && gradient.iter().all(|g| g.is_finite()) {
            Ok(lp)
        } else {
            Err(NotFinite)
        }
    }

    fn expand_vector<R: nuts_rs::rand::Rng + ?Sized>(
        &mut self,
        _rng: &mut R,
        position: &[f64],
    ) -> Result<Vec<f64>, nuts_rs::CpuMathError> {
        Ok(position.to_vec())
    }
}

/// What one chain brings back.
struct ChainRun {
    draws: Vec<Box<[f64]>>,
    energy: Vec<f64>,
    divergences: u64,
    max_depth_hits: u64,
}

fn run_chain(
    data: &SurvivalData,
    settings: &SamplerSettings,
    chain: usize,
    on_draw: &(dyn Fn(usize, bool) + Sync),
) -> Result<ChainRun, SampleError> {
    let fail = |e: &dyn std::fmt::Display| SampleError::Chain {
        chain,
        message: e.to_string(),
    };
    let mut nuts = DiagNutsSettings {
        num_tune: settings.warmup,
        num_draws: settings.draws,
        maxdepth: settings.max_depth,
        ..Default::default()
    };
    nuts.adapt_options.step_size_settings.target_accept = settings.target_accept;
    let mut rng = StdRng::seed_from_u64(
        settings
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(chain as u64),
    );
    let mut sampler = nuts
        .new_chain(chain as u64, CpuMath::new(Density(data)), &mut rng)
        .map_err(|e| fail(&e))?;
    // Start near the prior's centre, jittered per chain so that chains can disagree.
    let jitter = |k: u64| {
        let x = (settings.seed ^ (chain as u64 * 7919 + k)).wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.4
    };
    let mut start = vec![0.0; data.dim()];
    start[0] = jitter(0);
    start[1] = data.log_median_duration + jitter(1);
    start[2] = -1.0 + jitter(2);
    for (k, z) in start.iter_mut().enumerate().skip(3) {
        *z = jitter(k as u64);
    }
    sampler.set_position(&start).map_err(|e| fail(&e))?;
    let mut run = ChainRun {
        draws: Vec::with_capacity(settings.draws as usize),
        energy: Vec::with_capacity(settings.draws as usize),
        divergences: 0,
        max_depth_hits: 0,
    };
    for i in 0..settings.warmup + settings.draws {
        let (draw, _, stats, progress) = sampler.expanded_draw().map_err(|e| fail(&e))?;
        on_draw(chain, i < settings.warmup);
        if progress.tuning {
            continue;
        }
        run.divergences += u64::from(progress.diverging);
        run.max_depth_hits += u64::from(stats.maxdepth_reached);
        run.energy.push(stats.point.energy);
        run.draws.push(draw);
    }
    Ok(run)
}

/// Samples `settings.chains` chains in parallel; `on_draw(chain, warming_up)` is called after
/// every iteration (for progress bars).
pub fn sample(
    data: &SurvivalData,
    settings: &SamplerSettings,
    on_draw: &(dyn Fn(usize, bool) + Sync),
) -> Result<Fit, SampleError> {
    if settings.chains < 2 || settings.draws < 4 {
        return Err(SampleError::Settings(
            "at least 2 chains and 4 draws are needed for the diagnostics".into(),
        ));
    }
    let started = Instant::now();
    let runs: Vec<Result<ChainRun, SampleError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..settings.chains)
            .map(|chain| scope.spawn(move || run_chain(data, settings, chain, on_draw)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("chain thread panicked"))
            .collect()
    });
    let runs = runs.into_iter().collect::<Result<Vec<_>, _>>()?;
    let dim = data.dim();
    let mut draws = vec![Vec::with_capacity(runs.len()); dim];
    for run in &runs {
        for (k, param) in draws.iter_mut().enumerate() {
            param.push(run.draws.iter().map(|d| d[k]).collect());
        }
    }
    Ok(Fit {
        draws,
        divergences: runs.iter().map(|r| r.divergences).sum(),
        max_depth_hits: runs.iter().map(|r| r.max_depth_hits).sum(),
        energy: runs.into_iter().map(|r| r.energy).collect(),
        sampling_s: started.elapsed().as_secs_f64(),
    })
}
