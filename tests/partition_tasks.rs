//! Partition tasks on worker threads (docs/design.md §8), in process with the real RocksDB
//! store: the same stream run with one thread and with four. 400 vehicles for 50 days over 8
//! partitions, with late, duplicate, out-of-order and corrupt records, vehicle regressions and
//! a firmware rollout, where every partition's close is small; then 1,400 vehicles for 20 days
//! over 4 partitions at commits of 10,000 records' worth, where each close (350 vehicles'
//! series, 5,600) is large and the other partitions' records wait for the commit. Every column
//! family of the two stores is equal byte for byte, the alerts and dead letters are equal in
//! order (so per partition in offset order too), and with four threads at least two tasks ran
//! at the same time.

use std::collections::BTreeMap;
use std::sync::Arc;

use safetel::config::Config;
use safetel::engine::{Engine, PartitionId, RestoredState, Retention};
use safetel::generator::{FaultConfig, Generator, GeneratorConfig};
use safetel::metrics::Metrics;
use safetel::model::RegressionAlert;
use safetel::store::Store;
use safetel::stream::memory::{DeadLetter, run_in_memory};

struct Run {
    engine: Engine,
    metrics: Metrics,
    store: Arc<Store>,
    alerts: Vec<RegressionAlert>,
    dead_letters: Vec<DeadLetter>,
    _dir: tempfile::TempDir,
}

/// The stream through an engine on `threads` threads, its vehicles leaving memory for the store
/// when silent and its closed bins once durable, a commit every `commit_weight` records' worth.
fn run(
    records: &[(String, Vec<u8>)],
    partitions: i32,
    threads: usize,
    commit_weight: usize,
) -> Run {
    let metrics = Metrics::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state")).unwrap());
    let config = Config::default_config();
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        RestoredState::default(),
        metrics.clone(),
    )
    .unwrap()
    .with_retention(Retention::of(&config))
    .with_archive(Arc::clone(&store) as Arc<dyn safetel::engine::VehicleArchive>)
    .with_task_threads(safetel::stream::threads::for_config(threads));
    let mut target = Arc::clone(&store);
    let (dead, outputs) = run_in_memory(
        &mut engine,
        records.iter().cloned(),
        partitions,
        &mut target,
        commit_weight,
    )
    .unwrap();
    Run {
        engine,
        metrics,
        store,
        alerts: outputs.alerts,
        dead_letters: dead.records,
        _dir: dir,
    }
}

/// Alerts by the partition of what they are about (cohorts under the aggregator's), each
/// partition's in the order raised.
fn by_partition(alerts: &[RegressionAlert], run: &Run) -> BTreeMap<String, Vec<String>> {
    let vehicles = run.engine.vehicles();
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for alert in alerts {
        let partition = vehicles
            .get(&alert.key)
            .map_or("cohorts".to_string(), |v| v.partition.to_string());
        grouped
            .entry(partition)
            .or_default()
            .push(serde_json::to_string(alert).unwrap());
    }
    grouped
}

#[test]
fn one_thread_and_four_threads_write_the_same_state_and_raise_the_same_alerts() {
    let small = stream(400, 50);
    let one = run(&small, 8, 1, 3_000);
    let four = run(&small, 8, 4, 3_000);
    assert_eq!(one.metrics.records_deferred.get(), 0);
    assert_same(&one, &four, 8);
    let large = stream(1_400, 20);
    let one = run(&large, 4, 1, 10_000);
    let four = run(&large, 4, 4, 10_000);
    assert!(one.metrics.records_deferred.get() > 0, "records waited");
    assert_eq!(
        one.metrics.records_deferred.get(),
        four.metrics.records_deferred.get()
    );
    assert_same(&one, &four, 4);
}

/// `vehicles` for `days`, with bad records of every kind and a firmware rollout.
fn stream(vehicles: usize, days: u32) -> Vec<(String, Vec<u8>)> {
    let mut fleet = GeneratorConfig {
        seed: 8,
        vehicles,
        days,
        critical_per_hour: 0.01,
        faults: FaultConfig {
            out_of_order: 0.01,
            late: 0.005,
            duplicate: 0.01,
            corrupt: 0.005,
        },
        ..Default::default()
    };
    if let Some(rollout) = &mut fleet.regressions.firmware_rollout {
        rollout.day = days * 2 / 5;
    }
    fleet.validate().unwrap();
    Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect()
}

/// The same store, entry by entry, and the same alerts and dead letters in the same order; with
/// four threads at least two tasks ran at once.
fn assert_same(one: &Run, four: &Run, partitions: usize) {
    // Four threads ran tasks side by side; one thread, one task at a time.
    assert_eq!(one.engine.most_tasks_at_once(), 1);
    assert!(
        four.engine.most_tasks_at_once() >= 2,
        "{} tasks at once",
        four.engine.most_tasks_at_once()
    );
    assert_eq!(
        four.engine.source_states().count(),
        partitions,
        "a task per partition"
    );

    // Every column family, entry by entry.
    let (dump_one, dump_four) = (one.store.dump().unwrap(), four.store.dump().unwrap());
    assert_eq!(
        dump_one.keys().collect::<Vec<_>>(),
        dump_four.keys().collect::<Vec<_>>()
    );
    for (cf, entries) in &dump_one {
        let other = &dump_four[cf];
        assert_eq!(entries.len(), other.len(), "entries of {cf}");
        if let Some(at) = entries.iter().zip(other).position(|(a, b)| a != b) {
            panic!(
                "{cf} differs at entry {at}: key {:?}",
                String::from_utf8_lossy(&entries[at].0)
            );
        }
    }
    for cf in [
        "vehicles",
        "bins",
        "series",
        "positions",
        "facts_by_bin",
        "rejected",
    ] {
        assert!(!dump_one[cf].is_empty(), "the stream wrote {cf}");
    }

    // The same alerts and dead letters, in the same order.
    assert!(!one.alerts.is_empty(), "the fleet raises alerts");
    assert!(
        one.alerts
            .iter()
            .any(|a| a.key.starts_with("firmware:") || a.key.starts_with("model:")),
        "cohort alerts too"
    );
    assert_eq!(
        by_partition(&one.alerts, one),
        by_partition(&four.alerts, four)
    );
    assert_eq!(one.alerts, four.alerts);
    assert!(!one.dead_letters.is_empty(), "the generator's faults");
    let letters = |run: &Run| -> Vec<(PartitionId, i64, &'static str)> {
        run.dead_letters
            .iter()
            .map(|d| (d.partition, d.offset, d.reason))
            .collect()
    };
    assert_eq!(letters(one), letters(four));
}
