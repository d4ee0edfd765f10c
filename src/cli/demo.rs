//! `safetel demo`: a generated fleet with injected regressions through the same engine, in
//! process, with RocksDB in a temporary folder (or `--state-dir`): what it saw, the alerts it
//! raised, and how they score against the truth. Writes `alerts.jsonl`, `truth.json`,
//! `evaluation.json` and `summary.json` to `--out`. With `--serve [ADDR]` it then refits the
//! survival model on what it stored and serves the dashboard (and API and metrics) on ADDR,
//! loopback by default, until interrupted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::demo_report::{DemoReport, DemoRun};
use crate::config::Config;
use crate::engine::{Engine, RestoredState};
use crate::evaluate::evaluate;
use crate::generator::Generator;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::model::KeyKind;
use crate::store::Store;
use crate::store::history::HistoryCache;
use crate::stream::memory::{DeadLetterCounts, MemoryOutputs, MemoryRecord, MemorySource};
use crate::stream::runner::{self, CommitPolicy, Sinks, StatusBoard};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    fleet: super::generate::FleetArgs,
    /// Partitions the in-process source spreads vehicles over.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Keep the state here instead of a temporary folder.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Write alerts.jsonl, truth.json, evaluation.json and summary.json here.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// A regression counts as detected when an alert opened within this many days of its onset.
    #[arg(long, default_value_t = crate::evaluate::DEFAULT_HORIZON_DAYS)]
    horizon_days: f64,
    /// After the stream: refit, then serve the dashboard on this address until interrupted.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    serve: Option<String>,
}

pub fn execute(config: &Config, args: Args) -> anyhow::Result<()> {
    let mut fleet = args.fleet.load()?;
    // A little of every fault, so the demo shows the dead-letter path at work.
    fleet.faults = crate::generator::FaultConfig {
        out_of_order: 0.01,
        late: 0.001,
        duplicate: 0.002,
        corrupt: 0.001,
    };
    let mut generator = Generator::new(fleet.clone())?;

    let temp = tempfile::tempdir()?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("state"));
    let metrics = Metrics::new();
    let mut store = Arc::new(Store::open(&state_dir)?.with_history_cache(
        HistoryCache::new(config.state.cache_bytes()).with_metrics(metrics.clone()),
    ));
    // The demo generates its stream from the start, so it must start from empty state too:
    // mixing it into an earlier run's store would give neither run's numbers.
    if !store.restore()?.partitions.is_empty() {
        anyhow::bail!(
            "{} already holds state from an earlier run; the demo starts from empty state, so give it an empty --state-dir",
            state_dir.display()
        );
    }
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        metrics.clone(),
    )?
    .with_retention(crate::engine::Retention::of(config))
    .with_archive(Arc::clone(&store) as Arc<dyn crate::engine::VehicleArchive>);
    let mut dlq = DeadLetterCounts::default();
    let mut alerts = MemoryOutputs::default();
    let policy = CommitPolicy {
        interval: Duration::from_millis(config.state.commit_interval_ms),
        max_records: 50_000,
    };
    let status = StatusBoard::default();

    eprintln!(
        "demo: {} vehicles, {} days, seed {}; state in {}",
        fleet.vehicles,
        fleet.days,
        fleet.seed,
        state_dir.display()
    );
    let started = Instant::now();
    let summary = {
        let records = generator.by_ref().map(MemoryRecord::from);
        let mut source = MemorySource::new(records, args.partitions);
        let sinks = Sinks {
            dead_letters: &mut dlq,
            outputs: &mut alerts,
        };
        runner::run(
            &mut engine,
            &mut source,
            sinks,
            &mut store,
            policy,
            &AtomicBool::new(false),
            &status,
        )?
    };
    let elapsed = started.elapsed().as_secs_f64();
    let truth = generator.truth();

    let alerts = alerts.alerts;
    let evaluation = evaluate(&truth, &alerts, args.horizon_days);
    let report = DemoReport::of(DemoRun {
        summary: &summary,
        elapsed_s: elapsed,
        dead_lettered_by_reason: dlq.by_reason,
        vehicles: &engine.vehicles(),
        history: store.as_ref(),
        cohorts: engine.cohorts().into_keys().collect(),
        detector_updates: (
            metrics.detector_updates(KeyKind::Vehicle).get(),
            metrics.detector_updates(KeyKind::Cohort).get(),
        ),
        alerts: &alerts,
        truth: &truth,
        evaluation: &evaluation,
        horizon_days: args.horizon_days,
    });
    print!("{report}");

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(
        args.out.join("truth.json"),
        serde_json::to_vec_pretty(&truth)?,
    )?;
    let mut lines = Vec::new();
    for alert in &alerts {
        serde_json::to_writer(&mut lines, alert)?;
        lines.push(b'\n');
    }
    std::fs::write(args.out.join("alerts.jsonl"), lines)?;
    std::fs::write(
        args.out.join("evaluation.json"),
        serde_json::to_vec_pretty(&evaluation)?,
    )?;
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    println!(
        "  wrote alerts.jsonl, truth.json, evaluation.json and summary.json to {}/",
        args.out.display()
    );
    if let Some(address) = &args.serve {
        refit(config, &store, &args.out, &metrics);
        let app = AppState {
            vehicles: engine.vehicles(),
            cohorts: engine.cohort_view(),
            fleet: engine.fleet_view(),
            settings: Arc::new(engine.detection_settings().clone()),
            store: Arc::clone(&store),
            metrics,
            status: Arc::new(status),
            sampling: None,
            truth: Some(Arc::new(truth)),
            horizon_days: args.horizon_days,
            ready_max_lag_records: config.http.ready_max_lag_records,
            group: None,
        };
        serve(address, app, &config.http)?;
    }
    Ok(())
}

/// The nightly refit on the demo's store, so the diagnostics page has a run to show; its
/// snapshot goes under `out`. A refit that fails leaves the page saying so.
fn refit(config: &Config, store: &Store, out: &std::path::Path, metrics: &Metrics) {
    let refit = crate::config::RefitConfig {
        warehouse_dir: out.join("warehouse"),
        ..config.refit.clone()
    };
    eprintln!(
        "demo: refitting the survival model on the stored trips (NUTS, {} chains)",
        refit.chains
    );
    let outcome = crate::nightly::refit_from_store(store, &refit, &|_, _| {}).and_then(|outcome| {
        crate::nightly::record(store, &refit, &config.retention, &outcome, metrics)
    });
    match outcome {
        Ok((snapshot, priors)) => eprintln!(
            "demo: refit recorded ({} vehicle priors); snapshot in {}",
            priors.len(),
            snapshot.dir.display()
        ),
        Err(e) => {
            metrics.refit_runs.with_label_values(&["failed"]).inc();
            eprintln!("demo: refit failed: {e}");
        }
    }
}

/// Serves the dashboard on `address` until SIGINT or SIGTERM.
fn serve(address: &str, app: AppState, http: &crate::config::HttpConfig) -> anyhow::Result<()> {
    let limits = crate::http::HttpLimits::of(http, Duration::from_secs(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the dashboard to {address}"))?;
        let bound = listener.local_addr()?;
        println!("  dashboard: http://{bound}/  (Ctrl-C stops it)");
        let mut term = signal(SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        crate::http::serve(listener, app, limits, stop).await?;
        Ok(())
    })
}
