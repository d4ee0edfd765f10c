//! The store's format: a store of format 0 (values without version bytes) migrates on open, a
//! migration cut short goes on where it stopped, a newer format is refused, and changelog
//! records of format 0 are rewritten as they are read.

use super::*;
use crate::engine::{Prior, VehicleMeta};

/// A store of format 0: the values given, as an earlier safetel wrote them, and no format mark.
fn format_zero_store(path: &Path, values: &[(&'static str, Vec<u8>, Vec<u8>)]) {
    let store = Store::open(path).unwrap();
    store
        .db
        .delete_cf(store.cf(CF_META), codec::FORMAT_KEY)
        .unwrap();
    for (cf, key, value) in values {
        store.db.put_cf(store.cf(cf), key, value).unwrap();
    }
}

fn le(numbers: &[i64]) -> Vec<u8> {
    numbers.iter().flat_map(|n| n.to_le_bytes()).collect()
}

#[test]
fn a_store_without_version_bytes_is_migrated_on_open_and_reads_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let p = PartitionId::Source(3);
    let meta = VehicleMeta {
        vehicle_model: "M1".into(),
        firmware_version: "1.0".into(),
        last_event_time_ms: 1_700_000_000_000,
        ..VehicleMeta::default()
    };
    let stats = BinStats {
        trips: 4,
        critical: 2,
        exposure_ms: 7_200_000,
        ..BinStats::default()
    };
    let prior = Prior {
        a0: 2.5,
        b0: 0.75,
        run_id: 99,
    };
    format_zero_store(
        dir.path(),
        &[
            (
                CF_VEHICLES,
                keys::vehicle(p, "veh-1"),
                serde_json::to_vec(&meta).unwrap(),
            ),
            // The fixed 8-byte form of a bin, and positions of four numbers.
            (
                CF_BINS,
                keys::bin(p, "veh-1", 86_400_000),
                stats.encode().to_vec(),
            ),
            (
                CF_POSITIONS,
                keys::partition_prefix(p).to_vec(),
                le(&[120, 1_700_000_000_000, 5, 6]),
            ),
            (
                CF_FACT_BINS,
                keys::fact_bin_prefix(p, 86_400_000),
                le(&[17]),
            ),
            (
                CF_PRIORS,
                keys::vehicle(p, "veh-1"),
                [
                    2.5f64.to_le_bytes(),
                    0.75f64.to_le_bytes(),
                    99i64.to_le_bytes(),
                ]
                .concat(),
            ),
            (CF_CHANGELOG, keys::partition_prefix(p).to_vec(), le(&[41])),
        ],
    );

    let store = Store::open(dir.path()).unwrap();
    let restored = store.restore().unwrap();
    let (id, vehicle) = &restored.vehicles[0];
    assert_eq!(id, "veh-1");
    assert_eq!(vehicle.meta, meta);
    assert_eq!(vehicle.bins.get(&86_400_000), Some(&stats));
    let position = &restored.partitions[&p];
    assert_eq!((position.next_offset, position.closed_through_ms), (120, 6));
    assert_eq!(position.fact_bins.get(&86_400_000), Some(&17));
    assert_eq!(restored.priors, vec![("veh-1".to_string(), prior)]);
    assert_eq!(store.changelog_offsets().unwrap()[&p], 41);
    // Every value now starts with its family's current version byte, and the format is
    // recorded.
    use codec::Family;
    for (cf, version) in [
        (CF_VEHICLES, codec::Vehicles::VERSION),
        (CF_BINS, codec::Bins::VERSION),
        (CF_POSITIONS, codec::Positions::VERSION),
        (CF_FACT_BINS, codec::FactBins::VERSION),
        (CF_PRIORS, codec::Priors::VERSION),
        (CF_CHANGELOG, codec::ChangelogOffsets::VERSION),
    ] {
        for item in store.db.iterator_cf(store.cf(cf), IteratorMode::Start) {
            let (_, value) = item.unwrap();
            assert_eq!(value[0], version, "{cf}");
        }
    }
    let format = store
        .db
        .get_cf(store.cf(CF_META), codec::FORMAT_KEY)
        .unwrap();
    assert_eq!(format.as_deref(), Some(&[codec::FORMAT][..]));
    // Opened again, nothing is rewritten twice.
    drop(store);
    let again = Store::open(dir.path()).unwrap().restore().unwrap();
    assert_eq!(again.vehicles[0].1.bins.get(&86_400_000), Some(&stats));
}

#[test]
fn a_migration_cut_short_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let offset_key = |bin: i64| keys::fact_bin_prefix(PartitionId::Source(0), bin);
    // Bins 1 and 2 were rewritten (and recorded as such) before the process stopped; 3 was not.
    format_zero_store(
        dir.path(),
        &[
            (CF_FACT_BINS, offset_key(1), encode::<FactBins>(&10)),
            (CF_FACT_BINS, offset_key(2), encode::<FactBins>(&20)),
            (CF_FACT_BINS, offset_key(3), le(&[30])),
            (CF_META, migration_key(CF_FACT_BINS), offset_key(2)),
        ],
    );
    let restored = Store::open(dir.path()).unwrap().restore().unwrap();
    let bins = &restored.partitions[&PartitionId::Source(0)].fact_bins;
    assert_eq!(
        bins.iter().map(|(b, o)| (*b, *o)).collect::<Vec<_>>(),
        [(1, 10), (2, 20), (3, 30)]
    );
}

#[test]
fn a_store_of_a_newer_format_is_refused_and_an_unreadable_one_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let newer = [codec::FORMAT + 1];
        store
            .db
            .put_cf(store.cf(CF_META), codec::FORMAT_KEY, newer)
            .unwrap();
    }
    match Store::open(dir.path()) {
        Err(StoreError::NewerFormat { found, known }) => {
            assert_eq!((found, known), (codec::FORMAT + 1, codec::FORMAT))
        }
        Err(other) => panic!("expected NewerFormat, got {other}"),
        Ok(_) => panic!("a newer store must not open"),
    }
    let dir = tempfile::tempdir().unwrap();
    format_zero_store(
        dir.path(),
        &[(
            CF_FACT_BINS,
            keys::fact_bin_prefix(PartitionId::Source(0), 1),
            vec![1, 2, 3],
        )],
    );
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt { cf, .. }) => assert_eq!(cf, CF_FACT_BINS),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("an unreadable value must not pass"),
    }
}

#[test]
fn changelog_records_of_format_zero_are_rewritten_as_they_are_read() {
    let code = PARTITIONED
        .iter()
        .position(|cf| *cf == CF_FACT_BINS)
        .unwrap() as u8;
    let key = [
        &[code][..],
        &keys::fact_bin_prefix(PartitionId::Source(2), 5),
    ]
    .concat();
    let legacy = Op::from_changelog(&key, Some(&le(&[77])), 0).unwrap();
    assert_eq!(legacy.cf, CF_FACT_BINS);
    assert_eq!(legacy.value, Some(encode::<FactBins>(&77)));
    let current = Op::from_changelog(&key, Some(&encode::<FactBins>(&77)), codec::FORMAT).unwrap();
    assert_eq!(current, legacy);
    // A delete is a delete in any format; a format this safetel does not know is unreadable.
    assert_eq!(Op::from_changelog(&key, None, 0).unwrap().value, None);
    assert_eq!(
        Op::from_changelog(&key, Some(b"x"), codec::FORMAT + 1),
        None
    );
}

#[test]
fn the_store_opens_exactly_the_registered_families_and_its_own_meta() {
    use std::collections::BTreeSet;
    let opened: BTreeSet<&str> = PARTITIONED.iter().chain(&LOCAL).copied().collect();
    let registered: BTreeSet<&str> = codec::FAMILIES.iter().copied().chain([CF_META]).collect();
    // A column family the store opens without registering it would not be migrated.
    assert_eq!(opened, registered);
    assert_eq!(
        opened.len(),
        PARTITIONED.len() + LOCAL.len(),
        "no name twice"
    );
}
