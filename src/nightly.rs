//! The nightly refit job: facts from the state store -> survival intervals -> NUTS fit ->
//! per-vehicle priors for the stream and a model-run record. An edge module: it reads the
//! store; where the outcome goes (straight into the store, or to a running engine for its next
//! commit) is the caller's choice.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

use crate::codec;
use crate::config::RefitConfig;
use crate::engine::Prior;
use crate::engine::runner::unix_ms;
use crate::refit::intervals::VehicleTimeline;
use crate::refit::model::{DataError, SurvivalData};
use crate::refit::result::{RefitResult, summarise_fit};
use crate::refit::sampler::{SampleError, SamplerSettings, sample};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum NightlyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no vehicle has driven in the refit window: nothing to fit")]
    NoData,
    #[error("survival data: {0}")]
    Data(#[from] DataError),
    #[error(transparent)]
    Sample(#[from] SampleError),
}

/// Survival rows: (vehicle, duration hours, event).
pub type Rows = Vec<(String, f64, bool)>;

/// What a refit produced.
pub struct RefitOutcome {
    pub result: RefitResult,
    /// (partition, vehicle, prior): empty when the fit did not converge.
    pub priors: Vec<(i32, String, Prior)>,
    /// The model-run record (`fact_model_run`), also kept in the store.
    pub run: Value,
    pub rows: Rows,
}

/// Intervals of every vehicle from the facts in the store, over the last `window_days` days of
/// event time (the window ends at the latest event stored). Returns (partition per vehicle, rows).
pub fn intervals_from_store(
    store: &Store,
    window_days: u32,
) -> Result<(BTreeMap<String, i32>, Rows), NightlyError> {
    let mut latest = i64::MIN;
    store.for_each_fact(|_, _, bytes| {
        if let Ok(event) = codec::decode(bytes) {
            latest = latest.max(event.event_time_ms);
        }
    })?;
    if latest == i64::MIN {
        return Err(NightlyError::NoData);
    }
    let from = latest - i64::from(window_days) * 86_400_000;
    let mut timelines: BTreeMap<String, (i32, VehicleTimeline)> = BTreeMap::new();
    store.for_each_fact(|partition, vehicle, bytes| {
        if let Ok(event) = codec::decode(bytes)
            && event.event_time_ms >= from
        {
            let entry = timelines
                .entry(vehicle.to_string())
                .or_insert_with(|| (partition, VehicleTimeline::default()));
            entry.1.add(&event);
        }
    })?;
    let mut partitions = BTreeMap::new();
    let mut rows = Vec::new();
    for (vehicle, (partition, timeline)) in timelines {
        let intervals = timeline.intervals();
        if intervals.is_empty() {
            continue;
        }
        partitions.insert(vehicle.clone(), partition);
        rows.extend(intervals.into_iter().map(|(t, d)| (vehicle.clone(), t, d)));
    }
    if rows.is_empty() {
        return Err(NightlyError::NoData);
    }
    Ok((partitions, rows))
}

/// Runs the refit on the store's facts. `on_draw(chain, warming_up)` reports progress.
pub fn refit_from_store(
    store: &Store,
    config: &RefitConfig,
    on_draw: &(dyn Fn(usize, bool) + Sync),
) -> Result<RefitOutcome, NightlyError> {
    let started = Instant::now();
    let run_id = unix_ms();
    let (partitions, rows) = intervals_from_store(store, config.window_days)?;
    let data = SurvivalData::new(&rows)?;
    let settings = SamplerSettings {
        chains: config.chains,
        warmup: config.warmup,
        draws: config.draws,
        seed: config.seed,
        ..SamplerSettings::default()
    };
    let fit = sample(&data, &settings, on_draw)?;
    let result = summarise_fit(&data, &fit, settings.seed);
    let converged = result.diagnostics.converged;
    let priors: Vec<(i32, String, Prior)> = if converged {
        result
            .vehicles
            .iter()
            .filter(|(_, v)| {
                v.prior_a0.is_finite()
                    && v.prior_b0.is_finite()
                    && v.prior_a0 > 0.0
                    && v.prior_b0 > 0.0
            })
            .map(|(id, v)| {
                let prior = Prior {
                    a0: v.prior_a0,
                    b0: v.prior_b0,
                    run_id,
                };
                (partitions[id], id.clone(), prior)
            })
            .collect()
    } else {
        Vec::new()
    };
    let p = &result.parameters;
    let run = json!({
        "run_id": run_id,
        "converged": converged,
        "priors_applied": converged,
        "vehicles": result.data.vehicles,
        "intervals": result.data.intervals,
        "events": result.data.events,
        "window_days": config.window_days,
        "chains": settings.chains, "warmup": settings.warmup, "draws": settings.draws, "seed": settings.seed,
        "alpha": p["alpha"], "mu": p["mu"], "sigma": p["sigma"],
        "diagnostics": result.diagnostics,
        "posterior_predictive": result.posterior_predictive,
        "sampling_s": fit.sampling_s,
        "total_s": started.elapsed().as_secs_f64(),
    });
    Ok(RefitOutcome {
        result,
        priors,
        run,
        rows,
    })
}
