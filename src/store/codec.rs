//! How each column family's values are stored: one [`Family`] per column family, with its
//! name, its key, its value's encoding, and the version byte every value starts with.
//!
//! A value is `[version] ++ body`. Reading takes any version up to the family's current one, so
//! a family changes its format by raising [`Family::VERSION`] and reading the older bodies in
//! [`Family::decode_body`]; a version it does not know is an unreadable value, never a guess.
//! Values written before safetel wrote version bytes (store format 0) are version 0: their whole
//! bytes are the body. A store records its format under [`FORMAT_KEY`]; opening one of format 0
//! rewrites its values first ([`migrate_value`]), and the changelog marks its records with the
//! format, so records of an earlier safetel are rewritten as they are restored.

use crate::engine::cohorts::AggregatorProgress;
use crate::engine::detection::FleetSums;
use crate::engine::{BinStats, PartitionId, Prior, VehicleMeta};
use crate::model::RegressionAlert;
use crate::refit::run::ModelRun;

use super::keys;

/// The store format this safetel writes: every value starts with its family's version byte.
pub const FORMAT: u8 = 1;

/// Where a store records its format (in the `meta` column family).
pub const FORMAT_KEY: &[u8] = b"format";

/// One column family's stored values.
pub trait Family {
    /// The column family's name in RocksDB.
    const CF: &'static str;
    /// The version of the values written now (their first byte).
    const VERSION: u8;
    /// What a key names.
    type Key<'a>;
    /// What a value holds.
    type Value;

    /// The store key of `key`.
    fn key(key: Self::Key<'_>) -> Vec<u8>;

    /// Appends the body of `value` (its bytes after the version byte).
    fn encode_body(value: &Self::Value, out: &mut Vec<u8>);

    /// A value from its body as written with `version` (0: before version bytes); `None` if
    /// the bytes are not a value of that version.
    fn decode_body(version: u8, body: &[u8]) -> Option<Self::Value>;
}

/// The stored bytes of `value`: its family's version byte, then its body.
pub fn encode<F: Family>(value: &F::Value) -> Vec<u8> {
    let mut out = vec![F::VERSION];
    F::encode_body(value, &mut out);
    out
}

/// A stored value; `None` if it is unreadable (or of a version this safetel does not know).
pub fn decode<F: Family>(bytes: &[u8]) -> Option<F::Value> {
    let (&version, body) = bytes.split_first()?;
    if version == 0 || version > F::VERSION {
        return None;
    }
    F::decode_body(version, body)
}

/// A value of `F` written before version bytes, in the current format.
fn migrate<F: Family>(legacy: &[u8]) -> Option<Vec<u8>> {
    F::decode_body(0, legacy).map(|value| encode::<F>(&value))
}

/// Eight little-endian bytes at `at`.
fn le8(body: &[u8], at: usize) -> Option<[u8; 8]> {
    body.get(at..at + 8)?.try_into().ok()
}

fn i64_at(body: &[u8], at: usize) -> Option<i64> {
    le8(body, at).map(i64::from_le_bytes)
}

/// A body of exactly one little-endian `i64`.
fn one_i64(body: &[u8]) -> Option<i64> {
    (body.len() == 8).then(|| i64_at(body, 0)).flatten()
}

fn partition_key(partition: PartitionId) -> Vec<u8> {
    keys::partition_prefix(partition).to_vec()
}

fn json_body<T: serde::Serialize>(value: &T, out: &mut Vec<u8>) {
    serde_json::to_writer(out, value).expect("state serialises as JSON");
}

fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

/// The column families: for each, its type, name, current version, key (with its lifetime, for
/// keys that borrow) and value, and how each is written and read. Declaring a family here is
/// all it takes for [`FAMILIES`] to list it and [`migrate_value`] to rewrite its values.
macro_rules! families {
    ($(
        $(#[$doc:meta])*
        $name:ident: $cf:literal, version $version:literal,
        key <$lt:lifetime> $key:ty => |$k:ident| $keyed:expr,
        value $value:ty => |$v:ident, $out:ident| $encoded:expr,
        read |$version_read:pat_param, $body:ident| $decoded:expr
    );+ $(;)?) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl Family for $name {
                const CF: &'static str = $cf;
                const VERSION: u8 = $version;
                type Key<$lt> = $key;
                type Value = $value;

                fn key($k: Self::Key<'_>) -> Vec<u8> {
                    $keyed
                }

                fn encode_body($v: &$value, $out: &mut Vec<u8>) {
                    $encoded
                }

                fn decode_body($version_read: u8, $body: &[u8]) -> Option<$value> {
                    $decoded
                }
            }
        )+

        /// The name of every column family of stored values (all but the store's `meta`).
        pub const FAMILIES: &[&str] = &[$($cf),+];

        /// A value of column family `cf` written before version bytes (store format 0), in the
        /// current format; `None` if it is unreadable or `cf` is not a column family of values.
        pub fn migrate_value(cf: &str, legacy: &[u8]) -> Option<Vec<u8>> {
            match cf {
                $($cf => migrate::<$name>(legacy),)+
                _ => None,
            }
        }
    };
}

/// A fact segment's key: partition, bin of record time, vehicle, first offset.
pub type SegmentKey<'a> = (PartitionId, i64, &'a str, i64);

/// Where a partition stands, as its positions entry keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredPosition {
    pub next_offset: i64,
    pub watermark_ms: i64,
    pub seen_cutoff_ms: i64,
    pub closed_through_ms: i64,
    /// The review policy's scale (0.0 before there was one).
    pub sampling_scale: f64,
}

impl StoredPosition {
    fn encode(&self, out: &mut Vec<u8>) {
        for n in [
            self.next_offset,
            self.watermark_ms,
            self.seen_cutoff_ms,
            self.closed_through_ms,
            self.sampling_scale.to_bits() as i64,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    /// Five numbers; version 0 also had four, before the review policy's scale came.
    fn decode(version: u8, body: &[u8]) -> Option<StoredPosition> {
        let scale = match (version, body.len()) {
            (0, 32) => 0.0,
            (_, 40) => f64::from_bits(i64_at(body, 32)? as u64),
            _ => return None,
        };
        Some(StoredPosition {
            next_offset: i64_at(body, 0)?,
            watermark_ms: i64_at(body, 8)?,
            seen_cutoff_ms: i64_at(body, 16)?,
            closed_through_ms: i64_at(body, 24)?,
            sampling_scale: scale,
        })
    }
}

families! {
    /// A vehicle's attributes, by partition and vehicle: binary ([`super::attributes`]) from
    /// version 2; versions 0 and 1 were JSON, always with the vehicle page's recent lists, which
    /// version 2 carries only with the group view (a page reads them from the facts).
    Vehicles: "vehicles", version 2,
    key <'a> (PartitionId, &'a str) => |k| keys::vehicle(k.0, k.1),
    value VehicleMeta => |v, out| super::attributes::encode(v, out),
    read |version, body| match version {
        // Lists kept without the group view went stale with it: dropped.
        0 | 1 => from_json(body).map(super::attributes::without_recent_lists),
        _ => super::attributes::decode(body),
    };

    /// A cohort aggregator's progress (JSON), by its number.
    Cohorts: "cohorts", version 1,
    key <'a> i32 => |q| partition_key(PartitionId::Cohort(q)),
    value AggregatorProgress => |v, out| json_body(v, out),
    read |_, body| from_json(body);

    /// A refit's record (JSON), by its id (its start time).
    ModelRuns: "model_runs", version 1,
    key <'a> i64 => |run_id| keys::sortable_time(run_id).to_vec(),
    value ModelRun => |v, out| json_body(v, out),
    read |_, body| from_json(body);

    /// An alert published (JSON), by its id.
    Alerts: "alerts", version 1,
    key <'a> &'a str => |id| id.as_bytes().to_vec(),
    value RegressionAlert => |v, out| json_body(v, out),
    read |_, body| from_json(body);

    /// Facts of a safetel before retention (record segments), by vehicle and first offset:
    /// read, never written.
    Facts: "facts", version 1,
    key <'a> (PartitionId, &'a str, i64) => |k| keys::fact_segment(k.0, k.1, k.2),
    value Vec<u8> => |v, out| out.extend_from_slice(v),
    read |_, body| Some(body.to_vec());

    /// Accepted records' bytes (record segments), by partition, bin, vehicle and first offset.
    FactsByBin: "facts_by_bin", version 1,
    key <'a> SegmentKey<'a> => |k| keys::fact_segment_by_bin(k.0, k.1, k.2, k.3),
    value Vec<u8> => |v, out| out.extend_from_slice(v),
    read |_, body| Some(body.to_vec());

    /// The refit's timeline items (record segments), keyed as the facts' segments.
    Timeline: "timeline", version 1,
    key <'a> SegmentKey<'a> => |k| keys::fact_segment_by_bin(k.0, k.1, k.2, k.3),
    value Vec<u8> => |v, out| out.extend_from_slice(v),
    read |_, body| Some(body.to_vec());

    /// A key's change-point series as the engine encodes them (`engine::series`, which has its
    /// own format byte), by partition and key.
    Series: "series", version 1,
    key <'a> (PartitionId, &'a str) => |k| keys::vehicle(k.0, k.1),
    value Vec<u8> => |v, out| out.extend_from_slice(v),
    read |_, body| Some(body.to_vec());

    /// A vehicle's bin (or its retired sum), by partition, vehicle and bin start: its counts as
    /// varints, in `BinStats`' field order. Fields are only appended, so a bin written before
    /// some were has fewer, which read as zero: a new field needs no new version. Version 0 also
    /// had fixed 8-byte fields, told apart by length.
    Bins: "bins", version 1,
    key <'a> (PartitionId, &'a str, i64) => |k| keys::bin(k.0, k.1, k.2),
    value BinStats => |v, out| out.extend_from_slice(&v.encode_compact()),
    read |version, body| match version {
        0 if !body.len().is_multiple_of(8) => BinStats::decode_compact(body),
        // The fixed-width forms.
        0 => BinStats::decode(body),
        _ => BinStats::decode_compact(body),
    };

    /// A partition's fleet sums, by partition: its bins in their compact form, each after its
    /// length (version 1); version 0 had them fixed-width.
    Fleet: "fleet", version 1,
    key <'a> PartitionId => |p| partition_key(p),
    value FleetSums => |v, out| out.extend_from_slice(&v.encode_compact()),
    read |version, body| match version {
        0 => FleetSums::decode(body),
        _ => FleetSums::decode_compact(body),
    };

    /// A seen-id segment: (time, hash) pairs, 16 bytes each, by partition, latest time and
    /// first offset.
    Seen: "seen", version 1,
    key <'a> (PartitionId, i64, i64) => |k| keys::seen_segment(k.0, k.1, k.2),
    value Vec<(i64, u64)> => |entries, out| {
        for (time, hash) in entries {
            out.extend_from_slice(&time.to_le_bytes());
            out.extend_from_slice(&hash.to_le_bytes());
        }
    },
    read |_, body| {
        if !body.len().is_multiple_of(16) {
            return None;
        }
        body.chunks_exact(16)
            .map(|entry| Some((i64_at(entry, 0)?, u64::from_le_bytes(le8(entry, 8)?))))
            .collect()
    };

    /// A partition's position, by partition: little-endian numbers ([`StoredPosition`]).
    Positions: "positions", version 1,
    key <'a> PartitionId => |p| partition_key(p),
    value StoredPosition => |v, out| v.encode(out),
    read |version, body| StoredPosition::decode(version, body);

    /// Per bin of record time, the input offset of the first fact kept under it.
    FactBins: "fact_bins", version 1,
    key <'a> (PartitionId, i64) => |k| keys::fact_bin_prefix(k.0, k.1),
    value i64 => |offset, out| out.extend_from_slice(&offset.to_le_bytes()),
    read |_, body| one_i64(body);

    /// The input offsets a commit rejected, by partition and the last of them: the
    /// differences between successive offsets as zig-zag varints.
    Rejected: "rejected", version 1,
    key <'a> (PartitionId, i64) => |k| keys::fact_bin_prefix(k.0, k.1),
    value Vec<i64> => |offsets, out| {
        let mut previous = 0;
        for offset in offsets {
            crate::codec::write_long(offset - previous, out);
            previous = *offset;
        }
    },
    read |_, body| {
        let mut reader = crate::codec::Reader::new(body);
        let mut offsets = Vec::new();
        let mut offset = 0;
        while reader.position() < body.len() {
            offset += reader.long().ok()?;
            offsets.push(offset);
        }
        Some(offsets)
    };

    /// A vehicle's prior from the last converged refit, by partition and vehicle: a0, b0 and
    /// the run's id, little-endian.
    Priors: "priors", version 1,
    key <'a> (PartitionId, &'a str) => |k| keys::vehicle(k.0, k.1),
    value Prior => |prior, out| {
        out.extend_from_slice(&prior.a0.to_le_bytes());
        out.extend_from_slice(&prior.b0.to_le_bytes());
        out.extend_from_slice(&prior.run_id.to_le_bytes());
    },
    read |_, body| {
        (body.len() == 24).then_some(())?;
        Some(Prior {
            a0: f64::from_le_bytes(le8(body, 0)?),
            b0: f64::from_le_bytes(le8(body, 8)?),
            run_id: i64_at(body, 16)?,
        })
    };

    /// The last changelog offset a store reflects, by partition.
    ChangelogOffsets: "changelog", version 1,
    key <'a> PartitionId => |p| partition_key(p),
    value i64 => |offset, out| out.extend_from_slice(&offset.to_le_bytes()),
    read |_, body| one_i64(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_version_and_read_back() {
        let position = StoredPosition {
            next_offset: 42,
            watermark_ms: 1_700_000_000_000,
            seen_cutoff_ms: -5,
            closed_through_ms: i64::MIN,
            sampling_scale: 0.25,
        };
        let bytes = encode::<Positions>(&position);
        assert_eq!(bytes[0], Positions::VERSION);
        assert_eq!(bytes.len(), 1 + 40);
        assert_eq!(decode::<Positions>(&bytes), Some(position));
        let offsets = vec![3, 4, 10, 9_000_000];
        assert_eq!(
            decode::<Rejected>(&encode::<Rejected>(&offsets)),
            Some(offsets)
        );
        let seen = vec![(1_i64, u64::MAX), (-7, 0)];
        assert_eq!(decode::<Seen>(&encode::<Seen>(&seen)), Some(seen));
    }

    #[test]
    fn a_version_this_safetel_does_not_know_is_unreadable_not_guessed() {
        let mut bytes = encode::<FactBins>(&7);
        bytes[0] = FactBins::VERSION + 1;
        assert_eq!(decode::<FactBins>(&bytes), None);
        // Version 0 is the unversioned form: only migration reads it.
        bytes[0] = 0;
        assert_eq!(decode::<FactBins>(&bytes), None);
        assert_eq!(decode::<FactBins>(&[]), None);
    }

    #[test]
    fn values_written_before_version_bytes_migrate_to_the_current_format() {
        // Positions of four numbers (before the review policy's scale) and of five.
        let four: Vec<u8> = [9_i64, 8, 7, 6]
            .iter()
            .flat_map(|n| n.to_le_bytes())
            .collect();
        let migrated = migrate_value(Positions::CF, &four).unwrap();
        let read = decode::<Positions>(&migrated).unwrap();
        assert_eq!((read.next_offset, read.closed_through_ms), (9, 6));
        assert_eq!(read.sampling_scale, 0.0);
        // A bin in the fixed 8-byte form, and in the compact one.
        let stats = BinStats {
            trips: 3,
            critical: 1,
            exposure_ms: 3_600_000,
            ..BinStats::default()
        };
        for legacy in [stats.encode().to_vec(), stats.encode_compact()] {
            let migrated = migrate_value(Bins::CF, &legacy).unwrap();
            assert_eq!(decode::<Bins>(&migrated), Some(stats));
        }
        // Fleet sums of fixed-width bins.
        let sums = FleetSums {
            basis: stats,
            basis_bins: 3,
            ..FleetSums::default()
        };
        let migrated = migrate_value(Fleet::CF, &sums.encode()).unwrap();
        assert_eq!(decode::<Fleet>(&migrated), Some(sums));
        // JSON and opaque bytes keep their body.
        let alert = br#"{"not": "an alert"}"#;
        assert_eq!(
            migrate_value(Alerts::CF, alert),
            None,
            "unreadable stays unreadable"
        );
        let segment = b"\x02ab".to_vec();
        assert_eq!(
            decode::<Series>(&migrate_value(Series::CF, &segment).unwrap()),
            Some(segment)
        );
        assert_eq!(migrate_value("no such family", b"x"), None);
    }

    /// Migrating `legacy` (a value of `F` as safetel wrote it before version bytes) gives the
    /// current format, which reads back as `expected`.
    fn migrates_to<F: Family>(legacy: &[u8], expected: &F::Value)
    where
        F::Value: PartialEq + std::fmt::Debug,
    {
        let migrated = migrate_value(F::CF, legacy)
            .unwrap_or_else(|| panic!("{}: a legacy value did not migrate", F::CF));
        assert_eq!(migrated[0], F::VERSION, "{}", F::CF);
        assert_eq!(decode::<F>(&migrated).as_ref(), Some(expected), "{}", F::CF);
    }

    #[test]
    fn every_family_migrates_its_legacy_values() {
        use crate::model::{AlertStatus, HazardClass, KeyKind};
        let bytes =
            |numbers: &[i64]| -> Vec<u8> { numbers.iter().flat_map(|n| n.to_le_bytes()).collect() };
        let stats = BinStats {
            trips: 2,
            critical: 1,
            exposure_ms: 7_200_000,
            ..BinStats::default()
        };
        // A family added to the registry without a case here fails: the loop names it.
        for &cf in FAMILIES {
            match cf {
                Vehicles::CF => {
                    let meta = VehicleMeta {
                        vehicle_model: "M3".into(),
                        firmware_version: "2.1".into(),
                        last_event_time_ms: 5,
                        ..VehicleMeta::default()
                    };
                    migrates_to::<Vehicles>(&serde_json::to_vec(&meta).unwrap(), &meta);
                }
                Bins::CF => migrates_to::<Bins>(&stats.encode(), &stats),
                Facts::CF | FactsByBin::CF | Timeline::CF | Series::CF => {
                    let segment = b"\x01segment".to_vec();
                    match cf {
                        Facts::CF => migrates_to::<Facts>(&segment, &segment),
                        FactsByBin::CF => migrates_to::<FactsByBin>(&segment, &segment),
                        Timeline::CF => migrates_to::<Timeline>(&segment, &segment),
                        _ => migrates_to::<Series>(&segment, &segment),
                    }
                }
                Seen::CF => {
                    let legacy = bytes(&[11, 12, -3, 4]);
                    migrates_to::<Seen>(&legacy, &vec![(11, 12), (-3, 4)]);
                }
                Positions::CF => {
                    let read = StoredPosition {
                        next_offset: 1,
                        watermark_ms: 2,
                        seen_cutoff_ms: 3,
                        closed_through_ms: 4,
                        sampling_scale: 0.0,
                    };
                    migrates_to::<Positions>(&bytes(&[1, 2, 3, 4]), &read);
                }
                Cohorts::CF => {
                    let progress = AggregatorProgress {
                        closed_through_ms: Some(86_400_000),
                        ..AggregatorProgress::default()
                    };
                    let legacy = serde_json::to_vec(&progress).unwrap();
                    migrates_to::<Cohorts>(&legacy, &progress);
                }
                Fleet::CF => {
                    let sums = FleetSums {
                        basis: stats,
                        basis_bins: 2,
                        ..FleetSums::default()
                    };
                    migrates_to::<Fleet>(&sums.encode(), &sums);
                }
                FactBins::CF => migrates_to::<FactBins>(&bytes(&[77]), &77),
                ChangelogOffsets::CF => migrates_to::<ChangelogOffsets>(&bytes(&[9]), &9),
                Rejected::CF => {
                    let mut legacy = Vec::new();
                    Rejected::encode_body(&vec![5, 8, 30], &mut legacy);
                    migrates_to::<Rejected>(&legacy, &vec![5, 8, 30]);
                }
                Priors::CF => {
                    let prior = Prior {
                        a0: 1.5,
                        b0: 20.0,
                        run_id: 3,
                    };
                    let mut legacy = 1.5_f64.to_le_bytes().to_vec();
                    legacy.extend(20.0_f64.to_le_bytes());
                    legacy.extend(3_i64.to_le_bytes());
                    migrates_to::<Priors>(&legacy, &prior);
                }
                ModelRuns::CF => {
                    let mut run = ModelRun::default();
                    run.outline.run_id = 17;
                    run.outline.converged = true;
                    migrates_to::<ModelRuns>(&serde_json::to_vec(&run).unwrap(), &run);
                }
                Alerts::CF => {
                    let alert = RegressionAlert {
                        alert_id: "VEHICLE/v1/critical/2026-01-01/OPENED".into(),
                        status: AlertStatus::Opened,
                        key_kind: KeyKind::Vehicle,
                        key: "v1".into(),
                        hazard_class: HazardClass::Critical,
                        onset_estimate: 1,
                        detected_at: 2,
                        p_regression: 0.99,
                        hr_median: 2.0,
                        hr_low: 1.6,
                        hr_high: 2.5,
                        rate_before: 0.1,
                        rate_after: 0.2,
                        events_before: 3,
                        events_after: 6,
                        exposure_before: 30.0,
                        exposure_after: 30.0,
                        prior_source: "config".into(),
                        sampling_policy: "all".into(),
                    };
                    migrates_to::<Alerts>(&serde_json::to_vec(&alert).unwrap(), &alert);
                }
                other => panic!("no legacy value to migrate for family {other}"),
            }
        }
        let names: std::collections::BTreeSet<_> = FAMILIES.iter().collect();
        assert_eq!(
            names.len(),
            FAMILIES.len(),
            "each family is registered once"
        );
    }

    #[test]
    fn a_bin_written_before_fields_were_appended_reads_them_as_zero() {
        let stats = BinStats {
            trips: 3,
            exposure_ms: 9_000_000,
            critical: 2,
            risk_exposure_ms: 9_500_000,
            expected_critical_micro: 1_250_000,
            expected_disengagements_micro: 0,
            ..BinStats::default()
        };
        let current = encode::<Bins>(&stats);
        // 23 bytes of varints, so no padding byte: the last field (zero) is the last byte, and
        // the one before it (1_250_000) the three before that.
        assert_eq!(current.len(), 1 + 23);
        let shorter = &current[..current.len() - 1];
        assert_eq!(decode::<Bins>(shorter), Some(stats));
        let without_expected = &current[..current.len() - 4];
        let read = decode::<Bins>(without_expected).unwrap();
        assert_eq!(
            read.expected_critical_micro, 0,
            "the missing field reads as zero"
        );
        assert_eq!((read.trips, read.risk_exposure_ms), (3, 9_500_000));
        // Fewer fields than the first encoding had is no bin.
        assert_eq!(decode::<Bins>(&current[..5]), None);
        // Fleet sums keep each bin's length, so theirs read alike.
        let sums = FleetSums {
            basis: stats,
            recent: [BinStats::default()].into(),
            ..FleetSums::default()
        };
        assert_eq!(decode::<Fleet>(&encode::<Fleet>(&sums)), Some(sums));
    }
}
