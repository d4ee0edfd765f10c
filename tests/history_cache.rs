//! Closed bins out of memory, read back through the history cache (docs/design.md §7), in
//! process with the real RocksDB store: 300 vehicles for 60 days, run three times on the same
//! stream: with bins leaving memory and a cache far smaller than the fleet's history, with
//! them leaving and a cache that holds everything, and with everything kept in memory (no
//! store to read back from, as before bins left memory). The small cache stays within its
//! bytes and lets entries go; the engine holds a few bins per vehicle where the others hold
//! all; and the three agree: alerts, the store, and every page, a vehicle page whose closed
//! bins are only in RocksDB included.

use std::collections::BTreeMap;
use std::sync::Arc;

use safetel::config::Config;
use safetel::dashboard::{FleetVehicles, Sources};
use safetel::engine::{Engine, RestoredState, StateDelta};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::metrics::Metrics;
use safetel::store::Store;
use safetel::store::history::{CacheStats, HistoryCache};
use safetel::stream::memory::run_in_memory;
use safetel::stream::runner::{CommitError, CommitTarget};

const VEHICLES: usize = 300;
const DAYS: u32 = 60;
/// About three vehicles' 60 daily bins (each ~8 KB as the cache counts them).
const SMALL_CACHE_BYTES: usize = 24 << 10;

/// Writes each commit to the store; notes the cache's figures after each.
struct Recording {
    store: Arc<Store>,
    stats: Vec<CacheStats>,
}

impl CommitTarget for Recording {
    fn commit(&mut self, delta: StateDelta) -> Result<(), CommitError> {
        self.store.write(delta)?;
        self.stats.push(self.store.history_cache_stats());
        Ok(())
    }
}

struct Outcome {
    store: Arc<Store>,
    engine: Engine,
    alerts: Vec<serde_json::Value>,
    _dir: tempfile::TempDir,
}

/// A run over `records`; bins leave memory if `leave` (the store is the engine's archive),
/// the history cache holding `cache_bytes`.
fn run(records: &[(String, Vec<u8>)], leave: bool, cache_bytes: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(&dir.path().join("state"))
            .unwrap()
            .with_history_cache(HistoryCache::new(cache_bytes)),
    );
    let config = Config::default_config();
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        Metrics::new(),
    )
    .unwrap()
    .with_retention(safetel::engine::Retention::of(&config));
    if leave {
        engine =
            engine.with_archive(Arc::clone(&store) as Arc<dyn safetel::engine::VehicleArchive>);
    }
    let mut target = Recording {
        store: Arc::clone(&store),
        stats: Vec::new(),
    };
    // A commit every in-process batch: many commits, so bins leave as the stream goes.
    let (_, alerts) =
        run_in_memory(&mut engine, records.iter().cloned(), 4, &mut target, 1).unwrap();
    let alerts = alerts
        .alerts
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect();
    Outcome {
        store,
        engine,
        alerts,
        _dir: dir,
    }
}

/// Every page's JSON that shows vehicles' bins: the executive summary, rare events, the
/// ranking, and each vehicle's page (with its checks of the cache's bytes after each read).
fn pages(outcome: &Outcome, after_each_read: &mut dyn FnMut(CacheStats)) -> serde_json::Value {
    let (alerts, cohorts) = (outcome.store.alerts().unwrap(), BTreeMap::new());
    let fleet = outcome.engine.fleet_view().read().unwrap().clone();
    let vehicles = outcome.engine.vehicles();
    let sources = Sources {
        vehicles: FleetVehicles::local(&vehicles).with_history(outcome.store.as_ref()),
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
    let json = |v: &dyn erased::Json| v.json();
    let mut out = serde_json::json!({
        "summary": json(&safetel::dashboard::summary::data(&sources)),
        "rare_events": json(&safetel::dashboard::rare_events::data(&sources)),
        "ranking": json(&safetel::dashboard::vehicles::data(&sources, "", 1000)),
    });
    after_each_read(outcome.store.history_cache_stats());
    let mut ids: Vec<String> = Vec::new();
    vehicles.for_each(|id, _| ids.push(id.to_string()));
    ids.sort();
    for id in ids {
        let page = safetel::dashboard::keys::vehicle_data(&sources, &id).expect("a page");
        out["vehicles"][&id] = json(&page);
        let api = safetel::http::vehicle_json(&id, &sources.vehicles.get(&id).unwrap());
        out["api"][&id] = api;
        after_each_read(outcome.store.history_cache_stats());
    }
    out
}

mod erased {
    pub trait Json {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

#[test]
fn a_fleet_larger_than_the_cache_shows_what_a_fleet_kept_in_memory_shows() {
    let fleet = GeneratorConfig {
        seed: 31,
        vehicles: VEHICLES,
        days: DAYS,
        ..Default::default()
    };
    fleet.validate().unwrap();
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect();

    let small = run(&records, true, SMALL_CACHE_BYTES);
    let large = run(&records, true, 1 << 30);
    let in_memory = run(&records, false, 1 << 30);

    // Bins left memory: a vehicle holds its latest bins (those not closed, or closed within
    // the last two commits) where the run that kept everything holds all 60.
    let held = |o: &Outcome| -> usize {
        o.engine
            .vehicles()
            .snapshot()
            .iter()
            .map(|v| v.bins.len())
            .sum()
    };
    let stored = |o: &Outcome| -> u32 {
        o.engine
            .vehicles()
            .snapshot()
            .iter()
            .map(|v| v.stored.count)
            .sum::<u32>()
    };
    assert_eq!(in_memory.engine.vehicles().len(), VEHICLES);
    assert!(
        held(&in_memory) >= VEHICLES * (DAYS as usize - 5),
        "{} bins",
        held(&in_memory)
    );
    assert!(
        held(&small) <= VEHICLES * 4,
        "{} bins held in memory",
        held(&small)
    );
    assert_eq!(
        held(&small) + stored(&small) as usize,
        held(&in_memory),
        "every bin in memory or in the store"
    );
    assert_eq!(stored(&in_memory), 0);

    // The same conclusions and the same store.
    assert!(!in_memory.alerts.is_empty(), "the fleet raises alerts");
    assert_eq!(small.alerts, in_memory.alerts);
    assert_eq!(large.alerts, in_memory.alerts);
    assert_eq!(
        small.store.snapshot().unwrap(),
        in_memory.store.snapshot().unwrap()
    );
    for v in in_memory.engine.vehicles().snapshot().iter() {
        let other = small.engine.vehicles();
        assert_eq!(
            other.get(v.key()).unwrap().totals(),
            v.totals(),
            "{}",
            v.key()
        );
    }

    // The pages, read twice (the second time through a warm cache where it holds anything).
    let mut stats = Vec::new();
    let small_pages = pages(&small, &mut |s| stats.push(s));
    let small_again = pages(&small, &mut |s| stats.push(s));
    let large_pages = pages(&large, &mut |_| {});
    let memory_pages = pages(&in_memory, &mut |_| {});
    assert_eq!(small_pages, memory_pages);
    assert_eq!(small_again, memory_pages);
    assert_eq!(large_pages, memory_pages);
    // A vehicle page whose closed bins are all in RocksDB only: its chart has every day.
    let id = "veh-00007";
    let in_engine = small.engine.vehicles().get(id).unwrap().clone();
    assert!(in_engine.stored.count >= DAYS - 5, "{:?}", in_engine.stored);
    assert_eq!(
        small_pages["api"][id]["bins"].as_array().unwrap().len(),
        in_memory.engine.vehicles().get(id).unwrap().bins.len()
    );

    // The small cache: within its bytes after every read, with entries let go; the large one
    // read each vehicle once and then answered from memory.
    assert!(
        stats.iter().all(|s| s.resident_bytes <= SMALL_CACHE_BYTES),
        "{stats:?}"
    );
    let last = *stats.last().unwrap();
    assert!(last.evictions > 0, "{last:?}");
    assert!(
        last.resident_bytes > 0 && last.entries < VEHICLES,
        "{last:?}"
    );
    let large_stats = large.store.history_cache_stats();
    assert!(
        large_stats.evictions == 0 && large_stats.entries >= VEHICLES - 5,
        "{large_stats:?}"
    );
    assert!(large_stats.hits > 0, "{large_stats:?}");
}
