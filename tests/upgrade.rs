//! Upgrades: a store and a changelog written by an earlier release (committed fixtures under
//! `tests/fixtures/upgrade/`, each written by `examples/upgrade_fixture.rs` of its release)
//! restore into this one with the state this release makes of the same stream, and with the
//! logical state the earlier release dumped.

#[path = "upgrade/files.rs"]
mod files;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetel::engine::{PartitionId, StoredPartition};
use safetel::store::{Op, Store};
use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no upgrade fixture under {}",
        root.display()
    );
    dirs
}

/// The store this release makes of the fixture's input, with the fixture's settings.
fn replayed(fixture: &Path, dir: &Path) -> Store {
    let input = files::read_input(&std::fs::read(fixture.join("input.bin")).unwrap()).unwrap();
    let store = Arc::new(Store::open(&dir.join("replayed")).unwrap());
    let mut target = Arc::clone(&store);
    files::run_stream(input, &store, &mut target);
    drop(target);
    Arc::try_unwrap(store)
        .ok()
        .expect("the store is no longer shared")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// What the earlier release dumped, less what this release no longer keeps as state:
/// - the vehicle page's recent lists in a vehicle's attributes (releases up to 639a058): the
///   page now reads them from the facts, which the dump compares by digest; a store or
///   changelog of such a release is read with the lists dropped.
fn snapshot_file(fixture: &Path) -> Value {
    let mut dump: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("snapshot.json")).unwrap()).unwrap();
    if let Some(vehicles) = dump["vehicles"].as_object_mut() {
        for vehicle in vehicles.values_mut() {
            if let Some(meta) = vehicle["meta"].as_object_mut() {
                meta.remove("recent_trips");
                meta.remove("recent_critical");
            }
        }
    }
    dump
}

#[test]
fn an_earlier_releases_store_opens_to_the_state_of_the_same_stream_run_here() {
    for fixture in fixtures() {
        let dir = tempfile::tempdir().unwrap();
        let expected = replayed(&fixture, dir.path()).snapshot().unwrap();
        copy_dir(&fixture.join("store"), &dir.path().join("upgraded"));
        let upgraded = Store::open(&dir.path().join("upgraded")).unwrap();
        let state = upgraded.snapshot().unwrap();
        assert!(
            state["vehicles"].as_object().is_some_and(|v| v.len() > 5),
            "{}: the fixture holds vehicles",
            fixture.display()
        );
        assert_eq!(
            state,
            expected,
            "{}: the upgraded store differs from the same stream run here",
            fixture.display()
        );
        assert_eq!(
            state,
            snapshot_file(&fixture),
            "{}: the upgraded store differs from what the earlier release held",
            fixture.display()
        );
    }
}

/// The parts of a snapshot a changelog restores: the local facts and seen ids are rebuilt from
/// the input instead, the alerts and priors are each process's own.
fn logged_parts(snapshot: &Value) -> Value {
    let partitions: BTreeMap<&String, Value> = snapshot["partitions"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, state)| {
            let mut state = state.clone();
            let state_map = state.as_object_mut().unwrap();
            state_map.remove("seen");
            state_map.remove("seen_digest");
            (p, state)
        })
        .collect();
    serde_json::json!({
        "vehicles": snapshot["vehicles"],
        "partitions": partitions,
        "series": snapshot["series"],
        "cohort_aggregators": snapshot["cohort_aggregators"],
        "cohort_report_offsets": snapshot["cohort_report_offsets"],
    })
}

#[test]
fn an_earlier_releases_changelog_restores_to_the_state_of_the_same_stream_run_here() {
    for fixture in fixtures() {
        let dir = tempfile::tempdir().unwrap();
        let expected = logged_parts(&replayed(&fixture, dir.path()).snapshot().unwrap());
        let records =
            files::read_changelog(&std::fs::read(fixture.join("changelog.bin")).unwrap()).unwrap();
        let mut by_partition: BTreeMap<i32, Vec<Op>> = BTreeMap::new();
        for (format, partition, key, value) in &records {
            let op = Op::from_changelog(key, value.as_deref(), *format)
                .unwrap_or_else(|| panic!("{}: an unreadable changelog record", fixture.display()));
            by_partition.entry(*partition).or_default().push(op);
        }
        let restored = Store::open(&dir.path().join("restored")).unwrap();
        for (stored, ops) in &by_partition {
            let Some(StoredPartition::Partition(partition)) = PartitionId::from_stored(*stored)
            else {
                panic!("{}: changelog partition {stored}", fixture.display());
            };
            restored
                .replace_partition(partition, ops, Some(ops.len() as i64 - 1))
                .unwrap();
        }
        let state = logged_parts(&restored.snapshot().unwrap());
        assert!(
            state["series"].as_object().is_some_and(|s| !s.is_empty()),
            "{}: the changelog carries series",
            fixture.display()
        );
        assert_eq!(
            state,
            expected,
            "{}: the restored changelog differs from the same stream run here",
            fixture.display()
        );
        assert_eq!(
            state,
            logged_parts(&snapshot_file(&fixture)),
            "{}: the restored changelog differs from what the earlier release held",
            fixture.display()
        );
    }
}
