//! Retention over a long stream, in process with the real RocksDB store: 300 vehicles for 240
//! days with short horizons (facts 37 days, bins 60), against the same stream kept whole.
//! After the horizon the store's live bytes (what the changelog holds once compacted, and what
//! a restore reads), the bins held and the process's RSS level off; alerts, every vehicle's
//! totals, the refit's survival data and the warehouse's day files equal those of the run that
//! kept everything; and a restore reads only the live state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetel::config::Config;
use safetel::engine::{Engine, RestoredState, Retention, StateDelta};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::metrics::Metrics;
use safetel::store::Store;
use safetel::stream::memory::run_in_memory;
use safetel::stream::runner::{CommitError, CommitTarget};

const DAY: i64 = 86_400_000;
const DAYS: u32 = 240;
const WINDOW_DAYS: u32 = 30;
const RETENTION: Retention = Retention {
    facts_ms: Some(37 * DAY),
    bins_ms: Some(60 * DAY),
    silent_ms: None,
};

/// What the state weighed when the watermark passed a checkpoint day.
#[derive(Debug, Clone, Copy)]
struct Weight {
    day: i64,
    live_bytes: u64,
    bins: usize,
    rss_kb: u64,
    vehicles_in_memory: usize,
}

/// The store, weighed at the first commit past each checkpoint, with the warehouse written
/// every [`WAREHOUSE_EVERY_DAYS`] event days (as a daily refit would, sooner than facts expire).
struct Weighed {
    store: Arc<Store>,
    vehicles: safetel::engine::HeldFleet,
    first_day: i64,
    checkpoints: Vec<i64>,
    weights: Vec<Weight>,
    warehouse: PathBuf,
    next_warehouse_day: i64,
}

const WAREHOUSE_EVERY_DAYS: i64 = 10;

impl CommitTarget for Weighed {
    fn commit(&mut self, delta: StateDelta) -> Result<(), CommitError> {
        let watermark = delta.positions.iter().map(|p| p.watermark_ms).max();
        self.store.write(delta)?;
        let day = watermark.map_or(0, |w| (w - self.first_day) / DAY);
        if day >= self.next_warehouse_day {
            self.next_warehouse_day = day + WAREHOUSE_EVERY_DAYS;
            safetel::warehouse::write_snapshot(&self.store, &self.warehouse, 0, None)
                .map_err(|e| CommitError::Failed(e.to_string()))?;
        }
        if self.checkpoints.first().is_some_and(|c| day >= *c) {
            self.checkpoints.remove(0);
            self.weights.push(Weight {
                day,
                live_bytes: self
                    .store
                    .live_bytes()
                    .map_err(|e| CommitError::Failed(e.to_string()))?,
                bins: self.vehicles.snapshot().iter().map(|v| v.bins.len()).sum(),
                rss_kb: rss_kb(),
                vehicles_in_memory: self.vehicles.len(),
            });
        }
        Ok(())
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

struct Outcome {
    store: Arc<Store>,
    warehouse: PathBuf,
    engine: Engine,
    alerts: Vec<serde_json::Value>,
    weights: Vec<Weight>,
    _dir: tempfile::TempDir,
}

fn run(records: &[(String, Vec<u8>)], first_day: i64, retention: Retention) -> Outcome {
    run_with(
        records,
        first_day,
        retention,
        false,
        vec![60, 120, 180, 235],
        20_000,
    )
}

/// A run with `retention`, silent vehicles leaving memory if `archive` (the store gives them
/// back), weighed at the `checkpoints` (event days), committing every `commit_every` records.
fn run_with(
    records: &[(String, Vec<u8>)],
    first_day: i64,
    retention: Retention,
    archive: bool,
    checkpoints: Vec<i64>,
    commit_every: usize,
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state")).unwrap());
    let config = Config::default_config();
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        Metrics::new(),
    )
    .unwrap()
    .with_retention(retention);
    if archive {
        engine =
            engine.with_archive(Arc::clone(&store) as Arc<dyn safetel::engine::VehicleArchive>);
    }
    let warehouse = dir.path().join("warehouse");
    let mut target = Weighed {
        store: Arc::clone(&store),
        vehicles: engine.vehicles(),
        first_day,
        checkpoints,
        weights: Vec::new(),
        warehouse: warehouse.clone(),
        next_warehouse_day: WAREHOUSE_EVERY_DAYS,
    };
    let (_, alerts) = run_in_memory(
        &mut engine,
        records.iter().cloned(),
        4,
        &mut target,
        commit_every,
    )
    .unwrap();
    let alerts = alerts
        .alerts
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect();
    safetel::warehouse::write_snapshot(&store, &warehouse, 0, None).unwrap();
    Outcome {
        store,
        warehouse,
        engine,
        alerts,
        weights: target.weights,
        _dir: dir,
    }
}

#[test]
fn a_long_stream_levels_off_after_the_horizon_and_concludes_as_one_that_kept_everything() {
    let fleet = GeneratorConfig {
        seed: 11,
        vehicles: 300,
        days: DAYS,
        ..Default::default()
    };
    let first_day = fleet.validate().unwrap();
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect();

    let kept = run(&records, first_day, RETENTION);
    let whole = run(&records, first_day, Retention::KEEP_ALL);
    eprintln!("retention: {:?}", kept.weights);
    eprintln!("kept everything: {:?}", whole.weights);
    assert_eq!(kept.weights.len(), 4, "every checkpoint weighed");

    // Levels off: from day 120 (twice the longest horizon) to day 235 the live bytes and the
    // bins held grow by less than 10% (a day's worth of state is ~1/60 of what is kept; the
    // tolerance covers where in the day the checkpoint commit fell), while the run that kept
    // everything grows with the days (235/120: ~1.9x).
    let (mid, end) = (kept.weights[1], kept.weights[3]);
    assert!(
        (end.live_bytes as f64) < 1.10 * mid.live_bytes as f64,
        "live bytes {} at day {} -> {} at day {}",
        mid.live_bytes,
        mid.day,
        end.live_bytes,
        end.day
    );
    assert!(
        (end.bins as f64) < 1.10 * mid.bins as f64,
        "{mid:?} -> {end:?}"
    );
    let (whole_mid, whole_end) = (whole.weights[1], whole.weights[3]);
    assert!(
        (whole_end.live_bytes as f64) > 1.6 * whole_mid.live_bytes as f64,
        "the whole run grows: {whole_mid:?} -> {whole_end:?}"
    );
    assert!(
        end.live_bytes * 3 < whole_end.live_bytes,
        "{end:?} against {whole_end:?}"
    );
    // RSS (the retention run went first, so the other run's allocations are not in it): it
    // levels off too, within 25% (the allocator keeps freed pages; RocksDB's caches warm up).
    assert!(
        (end.rss_kb as f64) < 1.25 * mid.rss_kb as f64,
        "RSS {} kB at day {} -> {} kB at day {}",
        mid.rss_kb,
        mid.day,
        end.rss_kb,
        end.day
    );

    // The same conclusions: alerts, totals, and the refit's survival data over its window.
    assert!(!whole.alerts.is_empty(), "the fleet raises alerts");
    assert_eq!(kept.alerts, whole.alerts);
    let vehicles = whole.engine.vehicles().snapshot();
    assert_eq!(vehicles.len(), 300);
    for v in vehicles.iter() {
        let retained = kept.engine.vehicles();
        let other = retained.get(v.key()).expect("same vehicles");
        assert_eq!(other.totals(), v.totals(), "{}", v.key());
        assert!(
            other.bins.len() <= 62,
            "{}: {} bins",
            v.key(),
            other.bins.len()
        );
    }
    let intervals =
        |store: &Store| safetel::nightly::intervals_from_store(store, WINDOW_DAYS).unwrap();
    assert_eq!(intervals(&kept.store), intervals(&whole.store));
    // The warehouse's fact tables, day by day, byte for byte: every day was written while its
    // facts were kept.
    let (kept_days, whole_days) = (day_files(&kept.warehouse), day_files(&whole.warehouse));
    assert!(
        kept_days.len() > 2 * 4 * 200,
        "{} day files",
        kept_days.len()
    );
    assert_eq!(
        kept_days.keys().collect::<Vec<_>>(),
        whole_days.keys().collect::<Vec<_>>()
    );
    assert!(kept_days == whole_days, "the same rows in every day file");

    // The episode page of a vehicle alert: replayed bin by bin where nothing was retired; where
    // bins were, the kept bins' counts only (no P(regression) that the live series never had)
    // and the live fleet's baseline.
    let episode_of = |outcome: &Outcome, id: &str| {
        let (alerts, cohorts) = (outcome.store.alerts().unwrap(), BTreeMap::new());
        let fleet = outcome.engine.fleet_view().read().unwrap().clone();
        let vehicles = outcome.engine.vehicles();
        let sources = safetel::dashboard::Sources {
            vehicles: safetel::dashboard::FleetVehicles::local(&vehicles),
            cohorts: &cohorts,
            fleet: &fleet,
            settings: outcome.engine.detection_settings(),
            alerts: &alerts,
            model_run: None,
            sampling: None,
            truth: None,
            horizon_days: 14.0,
            history: outcome.store.as_ref(),
        };
        serde_json::to_value(safetel::dashboard::regressions::episode_data(&sources, id).unwrap())
            .unwrap()
    };
    let vehicle_alert = whole
        .alerts
        .iter()
        .find(|a| a["key_kind"] == "VEHICLE")
        .unwrap();
    let episode_id = vehicle_alert["alert_id"]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .unwrap()
        .0;
    let (kept_page, whole_page) = (
        episode_of(&kept, episode_id),
        episode_of(&whole, episode_id),
    );
    assert_eq!(kept_page["episode"], whole_page["episode"]);
    assert_eq!(kept_page["alerts"], whole_page["alerts"]);
    assert_eq!(whole_page["history_complete"], true);
    assert!(
        whole_page["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["p_regression"].is_number())
    );
    assert_eq!(kept_page["history_complete"], false);
    let kept_history = kept_page["history"].as_array().unwrap();
    assert!(!kept_history.is_empty() && kept_history.len() <= 62);
    assert!(kept_history.iter().all(|r| r["p_regression"].is_null()));
    // The counts of the bins kept are the whole run's for those bins.
    for row in kept_history {
        let same = whole_page["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["bin_start_ms"] == row["bin_start_ms"])
            .unwrap();
        assert_eq!(
            (&row["events"], &row["expected"]),
            (&same["events"], &same["expected"])
        );
    }

    // A restore reads only what is live, and stands where the live engine stood.
    let restored = kept.store.restore().unwrap();
    let bins: usize = restored.vehicles.iter().map(|(_, v)| v.bins.len()).sum();
    assert_eq!(bins, end_bins(&kept.engine));
    for (id, v) in &restored.vehicles {
        assert_eq!(
            v.totals(),
            kept.engine.vehicles().get(id).unwrap().totals(),
            "{id}"
        );
    }
    let snapshot = |store: &Store| {
        let mut s = store.snapshot().unwrap();
        s["vehicles"]
            .as_object_mut()
            .unwrap()
            .values_mut()
            .for_each(|v| v["bins"] = serde_json::Value::Null);
        s["facts"] = serde_json::Value::Null;
        s["series"] = serde_json::Value::Null;
        s
    };
    // Totals, meta and positions as in the whole run (bins and facts differ by design; series
    // bytes carry nothing retention touches, but are compared through the alerts above).
    assert_eq!(snapshot(&kept.store), snapshot(&whole.store));
    let config = Config::default_config();
    let again = Engine::new(
        config.stream.clone(),
        &config.detector,
        restored,
        Metrics::new(),
    )
    .unwrap();
    assert_eq!(end_bins(&again), end_bins(&kept.engine));
}

/// The fact tables' day files under `warehouse` (paths below it), with their bytes.
fn day_files(warehouse: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for table in ["fact_trip_safety", "fact_safety_event"] {
        for day in std::fs::read_dir(warehouse.join(table)).unwrap().flatten() {
            for file in std::fs::read_dir(day.path()).unwrap().flatten() {
                let path = file.path();
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path.strip_prefix(warehouse).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

fn end_bins(engine: &Engine) -> usize {
    engine
        .vehicles()
        .snapshot()
        .iter()
        .map(|v| v.bins.len())
        .sum()
}

#[test]
fn silent_vehicles_leave_memory_and_come_back_as_if_they_had_stayed() {
    // 60 vehicles for 120 days; 12 of them send nothing from day 20 to day 100 (80 days, well
    // past the 30-day pause), then drive again; 7 others stop on day 20 for good.
    let fleet = GeneratorConfig {
        seed: 12,
        vehicles: 60,
        days: 120,
        ..Default::default()
    };
    let first_day = fleet.validate().unwrap();
    let number = |key: &str| -> usize { key.trim_start_matches("veh-").parse().unwrap() };
    let away = |n: usize| n.is_multiple_of(5);
    let gone = |n: usize| n % 7 == 3 && !away(n);
    let silent = |key: &str, produced_ms: i64| {
        let (n, day) = (number(key), (produced_ms - first_day) / DAY);
        (away(n) && (20..100).contains(&day)) || (gone(n) && day >= 20)
    };
    let (n_away, n_gone) = (
        (0..60).filter(|n| away(*n)).count(),
        (0..60).filter(|n| gone(*n)).count(),
    );
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet)
        .unwrap()
        .filter(|r| !silent(&r.key, r.produced_ms))
        .map(|r| (r.key, r.bytes))
        .collect();
    // Bins kept 90 days: the silent ones' first bins retire from day ~90, while they are out.
    let retention = Retention {
        silent_ms: Some(30 * DAY),
        bins_ms: Some(90 * DAY),
        ..RETENTION
    };
    // Commits every in-process batch (4096 records, about 8 days here).
    let leaving = run_with(&records, first_day, retention, true, vec![85, 119], 1);
    let staying = run_with(&records, first_day, retention, false, vec![85, 119], 1);
    eprintln!("leaving: {:?}", leaving.weights);
    eprintln!("staying: {:?}", staying.weights);
    // Day 85: the silent vehicles are out of memory (they stay in the store); at the end,
    // all back.
    // (A vehicle with an episode open stays in memory, so not every one of the 19 leaves.)
    let out_at_day_85 = 60 - leaving.weights[0].vehicles_in_memory;
    assert!(
        out_at_day_85 >= (n_away + n_gone) / 2 && out_at_day_85 <= n_away + n_gone,
        "{out_at_day_85} of {} silent vehicles out of memory",
        n_away + n_gone
    );
    assert_eq!(staying.weights[0].vehicles_in_memory, 60);
    assert_eq!(leaving.weights[1].vehicles_in_memory, 60 - n_gone);
    assert_eq!(leaving.engine.departed_vehicles(), n_gone);
    // And the same conclusions: alerts, totals, the store (series, meta, bins, positions).
    assert!(!staying.alerts.is_empty());
    assert_eq!(leaving.alerts, staying.alerts);
    // Those that never came back are in the store, their bins retired there as in memory.
    for v in staying.engine.vehicles().snapshot().iter() {
        let (back, n) = (leaving.engine.vehicles(), number(v.key()));
        let found = match back.get(v.key()) {
            Some(found) => found.clone(),
            None => {
                assert!(gone(n), "{} is out of memory", v.key());
                let stored = leaving.store.load_vehicle(v.partition, v.key()).unwrap();
                let (stored, _) = stored.expect("in the store");
                assert_eq!(stored.bins, v.bins, "{}: bins retired alike", v.key());
                stored
            }
        };
        assert_eq!(found.totals(), v.totals(), "{}", v.key());
    }
    assert_eq!(
        leaving.store.snapshot().unwrap(),
        staying.store.snapshot().unwrap()
    );
    // The pause: a silent vehicle's series waited where its silence began instead of being
    // fed 50 empty days.
    let staying_vehicles = staying.engine.vehicles();
    let quiet = staying_vehicles.get("veh-00005").unwrap();
    let loud = staying_vehicles.get("veh-00001").unwrap();
    let next_bin = |v: &safetel::engine::VehicleState| {
        v.series_of(safetel::model::HazardClass::Critical)
            .unwrap()
            .next_bin_ms
    };
    assert!(next_bin(&quiet) <= next_bin(&loud));
}
