//! The group view built from commits' view items equals the engine's own state: vehicles (with
//! those that left memory gone, and back when they return), cohorts, fleet sums and alerts; and
//! an engine that adopts restored state (series with their last closed bins) and republishes it
//! gives a fresh view the same.

use std::sync::Arc;

use super::view::GroupState;
use super::*;
use crate::config::Config;
use crate::generator::{FirmwareRollout, Generator, GeneratorConfig};
use crate::store::Store;
use crate::stream::memory::run_in_memory;
use crate::stream::runner::{CommitError, CommitTarget};

const DAY: i64 = 86_400_000;

/// Writes the store and applies each commit's view items, as a reader of the topic would.
struct Viewed {
    store: Arc<Store>,
    view: GroupState,
    params: crate::detect::fleet_relative::FleetRelativeParams,
    items: usize,
}

impl CommitTarget for Viewed {
    fn commit(&mut self, delta: StateDelta) -> Result<(), CommitError> {
        self.items += delta.view.len();
        self.view.apply_items(self.params, &delta.view);
        Ok(self.store.write(delta)?)
    }
}

fn assert_view_is(view: &GroupState, engine: &Engine) {
    let vehicles = engine.vehicles().snapshot();
    assert_eq!(view.vehicles.len(), vehicles.len(), "vehicles in the view");
    for v in vehicles.iter() {
        let seen = &view.vehicles[v.key()];
        assert_eq!(seen.partition, v.partition, "{}", v.key());
        assert_eq!(seen.meta, v.meta, "{}", v.key());
        assert_eq!(seen.bins, v.bins, "{}", v.key());
        assert_eq!(seen.retired, v.retired, "{}", v.key());
        assert_eq!(seen.series, v.series, "{}", v.key());
    }
    let cohorts: BTreeMap<String, crate::model::ByClass<detection::Series>> = view
        .cohorts
        .iter()
        .map(|(k, (_, s))| (k.clone(), s.clone()))
        .collect();
    assert!(!cohorts.is_empty());
    assert_eq!(cohorts, engine.cohorts());
    let fleet = engine.fleet_view();
    let fleet = fleet.read().unwrap();
    for (p, partition) in fleet.iter() {
        assert_eq!(view.fleet.get(p), Some(&partition.fleet), "partition {p}");
        assert_eq!(
            view.partitions[p].departed, partition.departed,
            "partition {p}"
        );
    }
}

#[test]
fn the_group_view_of_a_run_is_its_state_and_a_republish_rebuilds_it() {
    let mut fleet = GeneratorConfig {
        seed: 5,
        vehicles: 60,
        days: 90,
        ..Default::default()
    };
    fleet.regressions.firmware_rollout = Some(FirmwareRollout {
        version: "fw-9".into(),
        day: 30,
        share: 0.5,
        hr_critical: 4.0,
    });
    let first_day = fleet.validate().unwrap();
    // A fifth of the fleet is silent from day 20 to 60: out of memory, then back.
    let silent = |key: &str, produced_ms: i64| {
        let n: usize = key.trim_start_matches("veh-").parse().unwrap();
        n.is_multiple_of(5) && (20..60).contains(&((produced_ms - first_day) / DAY))
    };
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet)
        .unwrap()
        .filter(|r| !silent(&r.key, r.produced_ms))
        .map(|r| (r.key, r.bytes))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state")).unwrap());
    let config = Config::default_config();
    let retention = Retention {
        silent_ms: Some(15 * DAY),
        bins_ms: Some(45 * DAY),
        facts_ms: Some(40 * DAY),
    };
    let new_engine = |restored: RestoredState| {
        Engine::new(
            config.stream.clone(),
            &config.detector,
            restored,
            Metrics::new(),
        )
        .unwrap()
        .with_retention(retention)
        .with_archive(Arc::clone(&store) as Arc<dyn VehicleArchive>)
        .with_group_view()
    };
    let mut engine = new_engine(RestoredState::default());
    let params = engine.detection_settings().params;
    let mut target = Viewed {
        store: Arc::clone(&store),
        view: GroupState::default(),
        params,
        items: 0,
    };
    // Check at the end of each half: silent vehicles out of memory at the first.
    let (first, second) = records.split_at(records.len() * 45 / 90);
    let (_, alerts) =
        run_in_memory(&mut engine, first.iter().cloned(), 4, &mut target, 1500).unwrap();
    assert!(engine.departed_vehicles() > 0, "vehicles left memory");
    assert_view_is(&target.view, &engine);
    let (_, more) =
        run_in_memory(&mut engine, second.iter().cloned(), 4, &mut target, 1500).unwrap();
    assert_view_is(&target.view, &engine);
    let all_alerts: Vec<_> = alerts.alerts.iter().chain(&more.alerts).cloned().collect();
    assert!(!all_alerts.is_empty());
    assert_eq!(
        target
            .view
            .alerts
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .len(),
        all_alerts
            .iter()
            .map(|a| &a.alert_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    for alert in &all_alerts {
        assert!(target.view.alerts.contains_key(&alert.alert_id));
    }

    // A process given these partitions republishes them: a view that knew nothing gets it all.
    let mut adopted = new_engine(store.restore().unwrap());
    adopted.republish_view();
    assert!(adopted.has_pending_changes());
    let delta = adopted.take_delta();
    let mut fresh = GroupState::default();
    fresh.apply_items(params, &delta.view);
    assert_eq!(fresh.vehicles.len(), target.view.vehicles.len());
    for (id, v) in &target.view.vehicles {
        let seen = &fresh.vehicles[id];
        assert_eq!(
            (&seen.meta, &seen.bins, seen.retired),
            (&v.meta, &v.bins, v.retired),
            "{id}"
        );
        // The store's encoding keeps each series' last closed bin: a restored series shows it.
        assert_eq!(seen.series, v.series, "{id}");
    }
    assert_eq!(fresh.fleet, target.view.fleet);
    assert!(
        !adopted
            .take_delta()
            .view
            .iter()
            .any(|i| matches!(i, view::ViewItem::Bin { .. })),
        "republished once"
    );
}

#[test]
fn a_view_record_that_does_not_read_is_refused_and_changes_nothing() {
    let params = Config::default_config().detector.params();
    let mut view = GroupState::default();
    for (key, value) in [
        (&b""[..], Some(&b"x"[..])),
        (b"zveh-1", Some(b"x")),
        (b"vveh-1", Some(b"\x00\x00\x00\x01not json")),
        (b"bshort", Some(b"x")),
        (b"sveh-1", Some(b"\x01\x00\x00\x00")),
    ] {
        let refused = view.apply(params, key, value).unwrap_err();
        assert!(!refused.reason.is_empty());
    }
    assert!(view.vehicles.is_empty());
}
