//! The nightly refit job: timelines from the state store -> survival intervals -> NUTS fit ->
//! per-vehicle priors for the stream, a model-run record and a star-schema snapshot. An edge
//! module: it reads and writes the store (concurrent with `run`'s commits, which RocksDB allows)
//! and the warehouse folder. `safetel refit` runs it once; `safetel run` schedules it daily.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use tracing::{error, info, warn};

use crate::codec;
use crate::config::{RefitConfig, RefitSchedule, RetentionConfig};
use crate::engine::Prior;
use crate::metrics::Metrics;
use crate::refit::intervals::{TimelineItem, VehicleTimeline};
use crate::refit::model::{DataError, SurvivalData};
use crate::refit::result::{RefitResult, summarise_fit};
use crate::refit::run::{ModelRun, RunOutline};
use crate::refit::sampler::{SampleError, sample};
use crate::store::{Store, StoreError};
use crate::stream::runner::unix_ms;
use crate::warehouse::{Snapshot, StratumTotals, WarehouseError, write_snapshot};

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
    #[error("snapshot: {0}")]
    Warehouse(#[from] WarehouseError),
}

/// Survival rows: (vehicle, duration hours, event).
pub type Rows = Vec<(String, f64, bool)>;

/// What a refit produced.
pub struct RefitOutcome {
    pub result: RefitResult,
    /// (partition, vehicle, prior): empty when the fit did not converge.
    pub priors: Vec<(crate::engine::PartitionId, String, Prior)>,
    /// The model-run record (`fact_model_run`), also kept in the store.
    pub run: ModelRun,
}

/// Intervals of every vehicle from the timelines in the store (the trips and critical events
/// the stream kept for the refit), over the last `window_days` days of event time: the trips
/// that ended and the events that happened since then (the window ends at the latest record
/// time accepted). A store from before timelines were kept is read from its facts, which hold
/// the same. Returns (partition per vehicle, rows).
pub fn intervals_from_store(
    store: &Store,
    window_days: u32,
) -> Result<(BTreeMap<String, crate::engine::PartitionId>, Rows), NightlyError> {
    match intervals_from(store, window_days, |add| store.for_each_timeline_item(add)) {
        Err(NightlyError::NoData) if store.for_each_timeline_item(|_, _, _| {})? == 0 => {
            intervals_from_facts(store, window_days)
        }
        outcome => outcome,
    }
}

/// [`intervals_from_store`] from the facts (the records' bytes) rather than the timelines.
pub fn intervals_from_facts(
    store: &Store,
    window_days: u32,
) -> Result<(BTreeMap<String, crate::engine::PartitionId>, Rows), NightlyError> {
    intervals_from(store, window_days, |add| {
        store.for_each_fact(|partition, vehicle, bytes| {
            if let Ok(event) = codec::decode(bytes) {
                for item in TimelineItem::of(&event) {
                    add(partition, vehicle, item);
                }
            }
        })
    })
}

/// The intervals of the timeline items `read` gives (partition, vehicle, item).
fn intervals_from(
    store: &Store,
    window_days: u32,
    read: impl FnOnce(
        &mut dyn FnMut(crate::engine::PartitionId, &str, TimelineItem),
    ) -> Result<u64, StoreError>,
) -> Result<(BTreeMap<String, crate::engine::PartitionId>, Rows), NightlyError> {
    // The partitions' watermarks are the largest event times accepted: no pass over the facts.
    let latest = store.latest_event_time()?.ok_or(NightlyError::NoData)?;
    let from = latest - i64::from(window_days) * 86_400_000;
    let mut timelines: BTreeMap<String, (crate::engine::PartitionId, VehicleTimeline)> =
        BTreeMap::new();
    read(&mut |partition, vehicle, item| {
        if item.time_ms() >= from {
            let entry = timelines
                .entry(vehicle.to_string())
                .or_insert_with(|| (partition, VehicleTimeline::default()));
            entry.1.add_item(item);
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

/// Runs the refit on the store's timelines. `on_draw(chain, warming_up)` reports progress.
pub fn refit_from_store(
    store: &Store,
    config: &RefitConfig,
    on_draw: &(dyn Fn(usize, bool) + Sync),
) -> Result<RefitOutcome, NightlyError> {
    let started = Instant::now();
    let run_id = unix_ms();
    let (partitions, rows) = intervals_from_store(store, config.window_days)?;
    let data = SurvivalData::new(&rows)?;
    let settings = config.sampler_settings();
    let fit = sample(&data, &settings, on_draw)?;
    let result = summarise_fit(&data, &fit, settings.seed);
    let converged = result.diagnostics.converged;
    let priors: Vec<(crate::engine::PartitionId, String, Prior)> = if converged {
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
    let run = ModelRun {
        outline: RunOutline {
            run_id,
            converged,
            priors_applied: converged,
            vehicles: result.data.vehicles,
            intervals: result.data.intervals,
            events: result.data.events,
        },
        window_days: config.window_days,
        chains: settings.chains,
        warmup: settings.warmup,
        draws: settings.draws,
        seed: settings.seed,
        alpha: p.get("alpha").copied(),
        mu: p.get("mu").copied(),
        sigma: p.get("sigma").copied(),
        diagnostics: Some(result.diagnostics.clone()),
        posterior_predictive: Some(result.posterior_predictive.clone()),
        traces: result.traces.clone(),
        sampling_s: fit.sampling_s,
        total_s: started.elapsed().as_secs_f64(),
        strata: None,
    };
    Ok(RefitOutcome {
        result,
        priors,
        run,
    })
}

/// Records a refit's outcome: the model run and (if it converged) the priors into the store,
/// the star-schema snapshot, and the metrics; then lets go of alerts and model runs past
/// `retention`. Returns the snapshot and the priors for a running engine (empty when the
/// previous priors stay).
pub fn record(
    store: &Store,
    config: &RefitConfig,
    retention: &RetentionConfig,
    outcome: &RefitOutcome,
    metrics: &Metrics,
) -> Result<(Snapshot, Vec<(String, Prior)>), NightlyError> {
    store.write_refit(&outcome.priors, &outcome.run)?;
    if retention.enabled
        && let Some(latest) = store.latest_event_time()?
    {
        let before = latest - i64::from(retention.alert_days) * 86_400_000;
        let (alerts, runs) = store.prune_records(before, retention.model_runs_kept)?;
        if alerts + runs > 0 {
            info!(
                alerts,
                model_runs = runs,
                "retention: old alerts and model runs deleted"
            );
        }
    }
    let run_id = outcome.run.outline.run_id;
    let snapshot = write_snapshot(
        store,
        &config.warehouse_dir,
        run_id,
        Some(&outcome.result.vehicles),
    )?;
    // The run's record also keeps the snapshot's trips by stratum, for the dashboard.
    let mut run = outcome.run.clone();
    run.strata = Some(
        snapshot
            .strata
            .iter()
            .map(StratumTotals::as_run_stratum)
            .collect(),
    );
    store.write_refit(&[], &run)?;
    let d = &outcome.result.diagnostics;
    metrics
        .refit_runs
        .with_label_values(&[if d.converged {
            "converged"
        } else {
            "not_converged"
        }])
        .inc();
    metrics.refit_duration.observe(outcome.run.total_s);
    metrics.refit_max_rhat.set(d.max_rhat);
    metrics.refit_min_ess_bulk.set(d.min_ess_bulk);
    metrics.refit_converged.set(i64::from(d.converged));
    if d.converged {
        info!(
            vehicles = outcome.priors.len(),
            max_rhat = d.max_rhat,
            min_ess_bulk = d.min_ess_bulk,
            "refit converged; new priors in use"
        );
    } else {
        warn!(
            max_rhat = d.max_rhat,
            min_ess_bulk = d.min_ess_bulk,
            divergences = d.divergences,
            "refit did not converge; the detectors keep their previous priors"
        );
    }
    let priors = outcome
        .priors
        .iter()
        .map(|(_, id, p)| (id.clone(), *p))
        .collect();
    Ok((snapshot, priors))
}

/// The next time (ms since the epoch) at `minutes` after midnight UTC, strictly after `now_ms`.
pub fn next_run_ms(now_ms: i64, minutes: u32) -> i64 {
    const DAY: i64 = 86_400_000;
    let today = now_ms.div_euclid(DAY) * DAY + i64::from(minutes) * 60_000;
    if today > now_ms { today } else { today + DAY }
}

/// `safetel run`'s scheduled refit: waits until the schedule says (daily at a UTC time, or an
/// interval after the last one), refits on the shared store, records the outcome and sends
/// converged priors to the engine; until `shutdown`.
pub fn schedule(
    store: Arc<Store>,
    (config, retention): (RefitConfig, RetentionConfig),
    when: RefitSchedule,
    shutdown: Arc<AtomicBool>,
    priors: mpsc::Sender<Vec<(String, Prior)>>,
    metrics: Metrics,
) {
    loop {
        let due = match when {
            RefitSchedule::Daily { minutes } => {
                let due = next_run_ms(unix_ms(), minutes);
                info!(at = %crate::model::utc_date(due), minutes_after_midnight_utc = minutes, "next refit scheduled");
                due
            }
            RefitSchedule::Every { seconds } => {
                info!(in_seconds = seconds, "next refit scheduled");
                unix_ms() + (seconds as i64).saturating_mul(1000)
            }
        };
        while unix_ms() < due {
            if shutdown.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        info!("refit starting");
        let outcome = refit_from_store(&store, &config, &|_, _| {})
            .and_then(|outcome| record(&store, &config, &retention, &outcome, &metrics));
        match outcome {
            Ok((snapshot, new_priors)) => {
                info!(snapshot = %snapshot.dir.display(), "refit recorded");
                if !new_priors.is_empty() && priors.send(new_priors).is_err() {
                    return;
                }
            }
            Err(e) => {
                metrics.refit_runs.with_label_values(&["failed"]).inc();
                metrics.refit_converged.set(0);
                error!(error = %e, "refit failed; the detectors keep their previous priors");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_is_today_if_still_ahead_else_tomorrow() {
        let midnight = 1_767_571_200_000; // 2026-01-05T00:00Z
        let at_0230 = midnight + 150 * 60_000;
        assert_eq!(next_run_ms(midnight, 150), at_0230);
        assert_eq!(next_run_ms(at_0230 - 1, 150), at_0230);
        assert_eq!(
            next_run_ms(at_0230, 150),
            at_0230 + 86_400_000,
            "strictly after now"
        );
        assert_eq!(
            next_run_ms(midnight + 23 * 3_600_000, 150),
            at_0230 + 86_400_000
        );
    }
}
