//! `safetel run`: Kafka in, RocksDB state, DLQ out, HTTP API; one shutdown order.
//!
//! The pipeline runs on its own thread (blocking librdkafka and RocksDB calls); the tokio runtime
//! serves HTTP and waits for signals. First SIGINT/SIGTERM: stop consuming, flush the DLQ, write
//! the last commit, exit within `state.shutdown_deadline_ms`. A second signal exits at once.
//! With `refit.schedule_utc` set, a thread refits daily on the same store (see `nightly`). With
//! a review budget (`[sampling]`), selected trips go to the review-requests topic and only the
//! review service's answers count as reviewed critical events.
//!
//! Several `run` processes with one `kafka.group_id` share the partitions: each keeps the state
//! of the partitions the group assigns it, commits it through the changelog, and restores a
//! partition it is given from there; cohort reports go through the repartition topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::kafka::{ChangelogStore, KafkaDeadLetters, KafkaOutputs, KafkaSource};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::stream::runner::{self, CommitPolicy, Sinks, StatusBoard};

/// How long the Kafka clients may take to close once the pipeline has stopped.
const CLIENTS_CLOSE_WITHIN: Duration = Duration::from_secs(5);

pub fn execute(config: &Config) -> anyhow::Result<()> {
    info!(config = %config.redacted_toml(), "starting safetel run");
    crate::registry::install(
        config,
        &[
            crate::codec::SchemaId::RegressionAlertV1,
            crate::codec::SchemaId::ReviewRequestV1,
        ],
    )
    .context("schema registry")?;
    let metrics = Metrics::new();
    let store = Arc::new(
        Store::open(&config.state.dir)?.with_history_cache(
            crate::store::history::HistoryCache::new(config.state.cache_bytes())
                .with_metrics(metrics.clone()),
        ),
    );
    // Everything stored locally, until the group assigns this process its partitions: then
    // it keeps those, brought up to date from their changelogs (see kafka::changelog).
    let restored = store.restore().context("restoring state")?;
    info!(
        vehicles = restored.vehicles.len(),
        partitions = restored.partitions.len(),
        "local state restored"
    );
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        restored,
        metrics.clone(),
    )?
    .with_retention(crate::engine::Retention::of(config))
    .with_archive(Arc::clone(&store) as Arc<dyn crate::engine::VehicleArchive>)
    .with_cohort_topic(config.kafka.cohort_partitions);
    if let Some(policy) = config.sampling.policy()? {
        info!(
            policy = policy.policy.name(),
            budget = policy.budget,
            topic = %config.kafka.review_requests_topic,
            "review budget: asking the review service for selected trips"
        );
        engine = engine
            .with_sampling(policy)
            .with_review_service(config.sampling.review_timeout_s * 1000);
    }
    let status = Arc::new(StatusBoard::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    // The daily refit reads facts and writes priors on its own thread; converged priors reach
    // the engine through a channel it checks between polls.
    let refit_thread = match config.refit.schedule()? {
        Some(when) => {
            let (priors_tx, priors_rx) = std::sync::mpsc::channel();
            engine.receive_priors(Box::new(priors_rx));
            let (store, refit, shutdown, metrics) = (
                Arc::clone(&store),
                (config.refit.clone(), config.retention.clone()),
                Arc::clone(&shutdown),
                metrics.clone(),
            );
            Some(
                std::thread::Builder::new()
                    .name("refit".into())
                    .spawn(move || {
                        crate::nightly::schedule(store, refit, when, shutdown, priors_tx, metrics)
                    })?,
            )
        }
        None => None,
    };
    let group_view = if config.http.group_view {
        engine = engine.with_group_view();
        Some(Arc::new(crate::engine::view::SharedView::default()))
    } else {
        None
    };
    let view_reader = match &group_view {
        Some(view) => Some(crate::kafka::group_view::spawn_reader(
            config,
            engine.detection_settings().params,
            Arc::clone(view),
            Arc::clone(&shutdown),
        )?),
        None => None,
    };
    let source = KafkaSource::new(config, metrics.clone()).context("creating consumer")?;
    let target = ChangelogStore::new(
        config,
        Arc::clone(&store),
        source.group_membership(),
        metrics.clone(),
    )
    .context("creating the changelog producer")?;
    let dlq = KafkaDeadLetters::new(config).context("creating dead-letter producer")?;
    let alerts = KafkaOutputs::new(config).context("creating alert producer")?;
    let app = AppState {
        vehicles: engine.vehicles(),
        cohorts: engine.cohort_view(),
        fleet: engine.fleet_view(),
        settings: Arc::new(engine.detection_settings().clone()),
        store: Arc::clone(&store),
        truth: None,
        horizon_days: crate::evaluate::DEFAULT_HORIZON_DAYS,
        metrics: metrics.clone(),
        status: Arc::clone(&status),
        sampling: config
            .sampling
            .policy()?
            .map(|p| (p.policy.name(), p.budget)),
        ready_max_lag_records: config.http.ready_max_lag_records,
        group: group_view.clone(),
    };
    let policy = CommitPolicy {
        interval: Duration::from_millis(config.state.commit_interval_ms),
        max_records: config.state.commit_max_records,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // Bind first: a busy port is a start-up error, before any record is consumed.
    let listen = config.http.listen.clone();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&listen))
        .with_context(|| format!("binding the HTTP server to {listen}"))?;

    // The loop's outcome is sent as soon as it is known; the Kafka clients close after it (a
    // client of a group that moved on may take long to close, and is not waited for past a bound).
    let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
    let pipeline = {
        let (shutdown, status) = (Arc::clone(&shutdown), Arc::clone(&status));
        std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                let (mut engine, mut source, mut dlq, mut alerts, mut target) =
                    (engine, source, dlq, alerts, target);
                let sinks = Sinks {
                    dead_letters: &mut dlq,
                    outputs: &mut alerts,
                };
                let outcome = runner::run(
                    &mut engine,
                    &mut source,
                    sinks,
                    &mut target,
                    policy,
                    &shutdown,
                    &status,
                );
                let _ = outcome_tx.send(outcome);
            })?
    };

    let deadline = Duration::from_millis(config.state.shutdown_deadline_ms);
    // Open requests get a moment to finish at shutdown, never the whole deadline.
    let limits = http::HttpLimits::of(&config.http, (deadline / 10).min(Duration::from_secs(2)));
    let outcome = runtime.block_on(async move {
        info!(address = %listener.local_addr()?, "serving API and metrics");
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, app, limits, async {
            let _ = http_stopped.await;
        }));
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let finished = outcome_rx;
        tokio::pin!(finished);
        let signalled = tokio::select! {
            joined = &mut finished => Some(joined),
            _ = term.recv() => None,
            _ = interrupt.recv() => None,
        };
        let joined = match signalled {
            Some(joined) => joined,
            None => {
                info!("shutdown requested: draining, flushing and committing");
                shutdown.store(true, Ordering::Relaxed);
                tokio::select! {
                    joined = &mut finished => joined,
                    _ = tokio::time::sleep(deadline) => bail!("shutdown did not finish within {deadline:?}"),
                    _ = term.recv() => second_signal(),
                    _ = interrupt.recv() => second_signal(),
                }
            }
        };
        let _ = stop_http.send(());
        let _ = server.await;
        // The clients close on the pipeline thread; a bounded wait, then the process goes on.
        let closed = tokio::task::spawn_blocking(move || pipeline.join());
        if tokio::time::timeout(CLIENTS_CLOSE_WITHIN, closed).await.is_err() {
            warn!(within = ?CLIENTS_CLOSE_WITHIN, "the Kafka clients did not close in time; exiting without them");
        }
        match joined {
            Ok(Ok(summary)) => {
                info!(?summary, "pipeline stopped cleanly");
                Ok(())
            }
            Ok(Err(e)) => {
                error!(error = %e, "pipeline failed");
                Err(anyhow::Error::new(e))
            }
            Err(_) => bail!("pipeline thread panicked"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    // A refit in progress is not waited for: what it wrote is durable, what it had not yet
    // written is redone by the next one.
    drop(refit_thread);
    // The view's reader stops at its next poll; not waited for.
    drop(view_reader);
    outcome
}

fn second_signal() -> ! {
    warn!("second signal: exiting now");
    std::process::exit(130)
}
