//! The nightly refit closes the loop: a generated fleet's facts in the state store -> NUTS fit
//! -> per-vehicle priors in the store -> after a restart the stream's critical-class detectors
//! take the fleet's spread from them (and their alerts say so).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use safetel::config::{Config, RefitConfig};
use safetel::engine::{Engine, RestoredState};
use safetel::generator::{Generator, GeneratorConfig};
use safetel::metrics::Metrics;
use safetel::model::HazardClass;
use safetel::nightly::refit_from_store;
use safetel::store::Store;
use safetel::stream::memory::{MemoryDeadLetters, MemoryOutputs, MemorySource};
use safetel::stream::runner::{self, CommitPolicy, Sinks, StatusBoard};

fn run(
    store: &mut Store,
    restored: RestoredState,
    records: Vec<(String, Vec<u8>)>,
    skip: HashMap<safetel::engine::PartitionId, i64>,
) -> (Engine, MemoryOutputs) {
    let config = Config::default_config();
    let mut engine = Engine::new(
        config.stream.clone(),
        &config.detector,
        restored,
        Metrics::new(),
    )
    .unwrap();
    let mut source = MemorySource::new(records.into_iter(), 4).resume_from(skip);
    let (mut dlq, mut alerts) = (MemoryDeadLetters::default(), MemoryOutputs::default());
    runner::run(
        &mut engine,
        &mut source,
        Sinks {
            dead_letters: &mut dlq,
            outputs: &mut alerts,
        },
        store,
        CommitPolicy {
            interval: Duration::from_secs(60),
            max_records: 10_000,
        },
        &AtomicBool::new(false),
        &StatusBoard::default(),
    )
    .unwrap();
    (engine, alerts)
}

#[test]
fn a_refit_sets_the_detectors_priors_and_the_stream_uses_them() {
    // 150 vehicles driving 8 h a day for 8 weeks, a third of their critical events 3x as
    // frequent: enough events for the vehicle effects.
    let fleet = GeneratorConfig {
        seed: 8,
        vehicles: 150,
        days: 56,
        trips_per_day: 12.0,
        ..Default::default()
    };
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect();
    let half = records.len() / 2;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let (before, _) = run(
        &mut store,
        RestoredState::default(),
        records[..half].to_vec(),
        HashMap::new(),
    );
    let config_prior = (
        Config::default_config().detector.a0,
        Config::default_config().detector.b0,
    );
    assert_eq!(before.prior("veh-00007"), None);

    let refit = RefitConfig::default();
    let outcome = refit_from_store(&store, &refit, &|_, _| {}).unwrap();
    assert!(
        outcome.result.diagnostics.converged,
        "{:?}",
        outcome.result.diagnostics
    );
    assert_eq!(outcome.priors.len(), 150, "a prior for every vehicle");
    store.write_refit(&outcome.priors, &outcome.run).unwrap();
    assert_eq!(store.model_runs().unwrap().len(), 1);

    // The priors follow the data: their mean rate sits near each vehicle's observed rate, and
    // the vehicles that had more events per hour get higher prior means.
    let hazards = &outcome.result.vehicles;
    let (mut high, mut low) = (Vec::new(), Vec::new());
    for (_, id, prior) in &outcome.priors {
        let v = &hazards[id];
        let observed = v.events as f64 / v.exposure_hours;
        (if observed > 0.009 {
            &mut high
        } else {
            &mut low
        })
        .push(prior.a0 / prior.b0);
        assert_ne!((prior.a0, prior.b0), config_prior);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&high) > mean(&low),
        "priors follow the vehicles' rates"
    );

    // Restart on the store and stream the rest: the detectors run on the refit's priors.
    let restored = store.restore().unwrap();
    let positions = restored
        .partitions
        .iter()
        .map(|(p, s)| (*p, s.next_offset))
        .collect();
    let (after, alerts) = run(&mut store, restored, records, positions);
    let (_, id, prior) = &outcome.priors[7];
    assert_eq!(after.prior(id), Some(*prior));
    let settings = after.detection_settings();
    let implied =
        safetel::engine::detection::shape_of_priors(outcome.priors.iter().map(|(_, _, p)| p))
            .expect("150 vehicles");
    assert_eq!(settings.fleet_shape_source[HazardClass::Critical], "refit");
    assert!(
        (settings.fleet_shape[HazardClass::Critical] / implied - 1.0).abs() < 0.05,
        "the critical class's spread {} is the refit's {implied} (to two digits)",
        settings.fleet_shape[HazardClass::Critical]
    );
    assert_eq!(
        settings.fleet_shape[HazardClass::Disengagement],
        Config::default_config().detector.fleet_shape,
        "the refit models critical events only"
    );
    for alert in alerts.alerts.iter().filter(|a| {
        a.key_kind == safetel::model::KeyKind::Vehicle
            && a.hazard_class == safetel::model::HazardClass::Critical
    }) {
        assert_eq!(alert.prior_source, "refit", "{}", alert.alert_id);
    }
}

#[test]
fn a_refit_that_does_not_converge_keeps_the_previous_priors_and_says_so() {
    let fleet = GeneratorConfig {
        seed: 3,
        vehicles: 30,
        days: 14,
        ..Default::default()
    };
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state")).unwrap();
    run(
        &mut store,
        RestoredState::default(),
        records,
        HashMap::new(),
    );
    let earlier = safetel::engine::Prior {
        a0: 2.0,
        b0: 300.0,
        run_id: 1,
    };
    store
        .write_refit(
            &[(
                safetel::engine::PartitionId::Source(0),
                "veh-00001".into(),
                earlier,
            )],
            &safetel::refit::run::ModelRun {
                outline: safetel::refit::run::RunOutline {
                    run_id: 1,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
    // Ten draws per chain cannot reach a bulk ESS of 400.
    let refit = RefitConfig {
        chains: 2,
        warmup: 20,
        draws: 10,
        warehouse_dir: dir.path().join("warehouse"),
        ..RefitConfig::default()
    };
    let outcome = refit_from_store(&store, &refit, &|_, _| {}).unwrap();
    assert!(!outcome.result.diagnostics.converged);
    assert!(outcome.priors.is_empty());
    let metrics = Metrics::new();
    let (_, sent) = safetel::nightly::record(
        &store,
        &refit,
        &safetel::config::RetentionConfig::default(),
        &outcome,
        &metrics,
    )
    .unwrap();
    assert!(sent.is_empty(), "nothing for the engine");
    let restored = store.restore().unwrap();
    assert_eq!(restored.priors, vec![("veh-00001".to_string(), earlier)]);
    let runs = store.model_runs().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(!runs[1].outline.converged);
    assert!(!runs[1].outline.priors_applied);
    let text = metrics.render();
    assert!(
        text.contains("safetel_refit_runs_total{outcome=\"not_converged\"} 1"),
        "{text}"
    );
    assert!(text.contains("safetel_refit_converged 0"));
}
