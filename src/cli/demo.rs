//! `safetel demo`: a generated fleet with injected regressions through the same engine, in
//! process, with RocksDB in a temporary folder (or `--state-dir`): what it saw, the alerts it
//! raised, and how they score against the truth. Writes `alerts.jsonl`, `truth.json`,
//! `evaluation.json` and `summary.json` to `--out`. With `--serve [ADDR]` it then refits the
//! survival model on what it stored and serves the dashboard (and API and metrics) on ADDR,
//! loopback by default, until interrupted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::config::Config;
use crate::engine::memory::{MemoryDeadLetters, MemoryOutputs, MemoryRecord, MemorySource};
use crate::engine::runner::{self, CommitPolicy, Sinks, StatusBoard};
use crate::engine::{BinStats, Engine, RestoredState};
use crate::evaluate::evaluate;
use crate::generator::{DAY_MS, Generator};
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::model::{AlertStatus, utc_date};
use crate::store::Store;
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
    let mut store = Arc::new(Store::open(&state_dir)?);
    // The demo generates its stream from the start, so it must start from empty state too:
    // mixing it into an earlier run's store would give neither run's numbers.
    if !store.restore()?.partitions.is_empty() {
        anyhow::bail!(
            "{} already holds state from an earlier run; the demo starts from empty state, so give it an empty --state-dir",
            state_dir.display()
        );
    }
    let metrics = Metrics::new();
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        metrics.clone(),
    )?
    .with_retention(config.retention())
    .with_archive(Arc::clone(&store) as Arc<dyn crate::engine::VehicleArchive>);
    let mut dlq = MemoryDeadLetters::default();
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

    let mut fleet_totals = BinStats::default();
    let mut worst: Vec<(f64, String, BinStats)> = Vec::new();
    for vehicle in engine.vehicles().iter() {
        let totals = vehicle.totals();
        fleet_totals.add(&totals);
        let rate = totals.critical as f64 / totals.exposure_hours().max(1e-9) * 1000.0;
        worst.push((rate, vehicle.key().clone(), totals));
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut dlq_by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    for letter in &dlq.records {
        *dlq_by_reason.entry(letter.reason).or_default() += 1;
    }

    println!(
        "safetel demo — {} records in {:.2} s ({:.0} records/s including generation and RocksDB commits)",
        summary.records,
        elapsed,
        summary.records as f64 / elapsed
    );
    println!(
        "  accepted {}   dead-lettered {} {:?}   commits {} ({:.2} s)",
        summary.accepted,
        summary.dead_lettered,
        dlq_by_reason,
        summary.commits,
        summary.commit_seconds
    );
    println!(
        "  expected in DLQ from injected faults: {:?}",
        truth.faults.expected_dlq
    );
    println!(
        "  fleet: {} vehicles, {} trips, {:.0} h driven, {} safety events, {} critical ({:.2} per 1000 h), {} disengagements",
        engine.vehicles().len(),
        fleet_totals.trips,
        fleet_totals.exposure_hours(),
        fleet_totals.safety_events,
        fleet_totals.critical,
        fleet_totals.critical as f64 / fleet_totals.exposure_hours().max(1e-9) * 1000.0,
        fleet_totals.disengagements
    );
    println!("  highest critical-event rates (per 1000 h):");
    for (rate, id, totals) in worst.iter().take(5) {
        let injected = truth
            .regressions
            .iter()
            .find(|r| &r.key == id)
            .map(|r| format!("  <- injected fault, HR {:.1}", r.true_hr));
        println!(
            "    {id}  {rate:6.2}  ({} events in {:.0} h){}",
            totals.critical,
            totals.exposure_hours(),
            injected.unwrap_or_default()
        );
    }
    println!(
        "  change-point series: {} vehicle and {} cohort bin updates ({} cohorts: {})",
        metrics
            .detector_updates(crate::model::KeyKind::Vehicle)
            .get(),
        metrics
            .detector_updates(crate::model::KeyKind::Cohort)
            .get(),
        engine.cohorts().len(),
        engine
            .cohorts()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    let alerts = alerts.alerts;
    let count = |status| alerts.iter().filter(|a| a.status == status).count();
    println!(
        "  alerts: {} opened, {} updated, {} resolved; {} injected regressions",
        count(AlertStatus::Opened),
        count(AlertStatus::Updated),
        count(AlertStatus::Resolved),
        truth.regressions.len()
    );
    println!(
        "  {:<24} {:<14} {:<10} {:<10} {:>20} {:>6}  truth",
        "key", "class", "onset est.", "detected", "HR [95% CrI]", "days"
    );
    for alert in alerts.iter().filter(|a| a.status == AlertStatus::Opened) {
        let injected = truth.regressions.iter().find(|r| {
            r.key == alert.key && r.hazard_class == alert.hazard_class
                || r.members.contains(&alert.key)
        });
        let verdict = match injected {
            Some(r) if alert.detected_at >= r.onset_ms => format!(
                "{} HR {:.1} from {}",
                if r.key == alert.key {
                    "injected"
                } else {
                    &r.key
                },
                r.true_hr,
                utc_date(r.onset_ms)
            ),
            _ => "false alarm".into(),
        };
        println!(
            "  {:<24} {:<14} {:<10} {:<10} {:>20} {:>6.1}  {verdict}",
            alert.key,
            alert.hazard_class.name(),
            utc_date(alert.onset_estimate),
            utc_date(alert.detected_at),
            format!(
                "{:.2} [{:.2}, {:.2}]",
                alert.hr_median, alert.hr_low, alert.hr_high
            ),
            alert.time_to_detection_days(),
        );
    }
    // What each injected vehicle fault gave its detector to work with.
    let window_ms = (args.horizon_days * DAY_MS as f64) as i64;
    let mut fault_events = Vec::new();
    for r in truth.regressions.iter().filter(|r| r.key_kind == "VEHICLE") {
        let Some(vehicle) = engine.vehicles().get(&r.key).map(|v| v.bins.clone()) else {
            continue;
        };
        let sum = |from: i64, to: i64| {
            let mut total = BinStats::default();
            for (_, stats) in vehicle.range(from..to) {
                total.add(stats);
            }
            (total.count(r.hazard_class), total.exposure_hours())
        };
        let (before, before_h) = sum(r.onset_ms - window_ms, r.onset_ms);
        let (after, after_h) = sum(r.onset_ms, r.onset_ms + window_ms);
        fault_events.push(
            json!({"key": r.key, "hazard_class": r.hazard_class, "true_hr": r.true_hr,
            "events_before": before, "exposure_hours_before": before_h,
            "events_after": after, "exposure_hours_after": after_h}),
        );
    }
    if !fault_events.is_empty() {
        let mut after: Vec<u64> = fault_events
            .iter()
            .map(|f| f["events_after"].as_u64().unwrap_or(0))
            .collect();
        let mut before: Vec<u64> = fault_events
            .iter()
            .map(|f| f["events_before"].as_u64().unwrap_or(0))
            .collect();
        after.sort_unstable();
        before.sort_unstable();
        println!(
            "  vehicle faults: events of their class in the {} days before / after onset: median {} / {} (max {} / {})",
            args.horizon_days,
            before[before.len() / 2],
            after[after.len() / 2],
            before[before.len() - 1],
            after[after.len() - 1]
        );
    }
    let evaluation = evaluate(&truth, &alerts, args.horizon_days);
    println!("  evaluation against the injected truth:");
    for line in evaluation.render().lines() {
        println!("    {line}");
    }

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
    let report = json!({
        "records": summary.records, "accepted": summary.accepted, "dead_lettered": summary.dead_lettered,
        "dead_lettered_by_reason": dlq_by_reason, "expected_dead_letters": truth.faults.expected_dlq,
        "vehicles": engine.vehicles().len(), "fleet_totals": fleet_totals, "elapsed_s": elapsed,
        "alerts": alerts.len(), "vehicle_fault_events": fault_events,
    });
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
