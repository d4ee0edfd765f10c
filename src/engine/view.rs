//! The group view: what every `run` process of a consumer group knows of the others' state.
//!
//! Each commit publishes, beside its changelog records and in the same transaction, the changes
//! of the partitions it commits as [`ViewItem`]s (a vehicle's attributes, its changed bins, its
//! series, a cohort's series, a partition's fleet sums and commit stamp, an alert) to one
//! compacted topic, keyed so that the latest record per key is the current value. Every process
//! reads the whole topic into a [`GroupState`]; the pages show this process's own partitions
//! live and the others' as of their last commit. After a process is given partitions it
//! publishes everything it holds of them once, so the view needs no history of its own.
//!
//! This module owns the records' format (keys, values, tombstones) and applying them. Pure.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::series::{Series, decode_series, encode_series};
use super::state::FleetSums;
use super::state::{BinStats, RETIRED_BIN, VehicleMeta, VehicleState};
use crate::detect::fleet_relative::FleetRelativeParams;
use crate::model::{ByClass, RegressionAlert};
use crate::partition_id::PartitionId;

/// One change of the group's state, as a commit publishes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewItem {
    /// A vehicle's attributes (its source partition with them).
    Vehicle {
        id: String,
        partition: PartitionId,
        meta: VehicleMeta,
    },
    /// A vehicle left memory (or the group): its attributes, series and these bins go.
    VehicleGone {
        id: String,
        bins: Vec<i64>,
    },
    /// A bin's new value; at [`RETIRED_BIN`], the sum of the bins retention let go of.
    Bin {
        id: String,
        start_ms: i64,
        stats: BinStats,
    },
    BinGone {
        id: String,
        start_ms: i64,
    },
    /// A vehicle's change-point series, as the store encodes them.
    Series {
        id: String,
        encoded: Vec<u8>,
    },
    /// A cohort's series, as the store encodes them, under its aggregator.
    Cohort {
        key: String,
        aggregator: i32,
        encoded: Vec<u8>,
    },
    /// A source partition's fleet sums.
    Fleet {
        partition: PartitionId,
        sums: FleetSums,
    },
    /// A partition (source or cohort aggregator) was committed.
    Partition(PartitionStamp),
    Alert(RegressionAlert),
}

/// Who last committed a partition, when, and how far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionStamp {
    pub partition: PartitionId,
    /// The committing process (`host:port` of its HTTP server, and its client id).
    pub member: String,
    pub committed_at_ms: i64,
    /// The next input offset of the partition, as committed.
    pub next_offset: i64,
    /// Vehicles of the partition out of memory (not in the view).
    pub departed: usize,
}

const VEHICLE: u8 = b'v';
const BIN: u8 = b'b';
const SERIES: u8 = b's';
const COHORT: u8 = b'c';
const FLEET: u8 = b'f';
const PARTITION: u8 = b'p';
const ALERT: u8 = b'a';

fn key(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(rest.len() + 1);
    key.push(tag);
    key.extend_from_slice(rest);
    key
}

fn bin_key(id: &str, start_ms: i64) -> Vec<u8> {
    let mut rest = start_ms.to_be_bytes().to_vec();
    rest.extend_from_slice(id.as_bytes());
    key(BIN, &rest)
}

/// A partition's stored number (4 bytes, big-endian) and then `bytes`.
fn with_partition(partition: PartitionId, bytes: &[u8]) -> Vec<u8> {
    let mut value = partition.stored().to_be_bytes().to_vec();
    value.extend_from_slice(bytes);
    value
}

/// A record of the view's topic: a key and a value, or a tombstone (`None`).
pub type ViewRecord = (Vec<u8>, Option<Vec<u8>>);

impl ViewItem {
    /// The topic's records for this item (a departed vehicle is several tombstones).
    pub fn records(&self) -> Vec<ViewRecord> {
        match self {
            ViewItem::Vehicle {
                id,
                partition,
                meta,
            } => {
                let meta = serde_json::to_vec(meta).expect("vehicle attributes serialise");
                vec![(
                    key(VEHICLE, id.as_bytes()),
                    Some(with_partition(*partition, &meta)),
                )]
            }
            ViewItem::VehicleGone { id, bins } => {
                let mut records = vec![
                    (key(VEHICLE, id.as_bytes()), None),
                    (key(SERIES, id.as_bytes()), None),
                ];
                records.extend(bins.iter().map(|start| (bin_key(id, *start), None)));
                records
            }
            ViewItem::Bin {
                id,
                start_ms,
                stats,
            } => vec![(bin_key(id, *start_ms), Some(stats.encode_compact()))],
            ViewItem::BinGone { id, start_ms } => vec![(bin_key(id, *start_ms), None)],
            ViewItem::Series { id, encoded } => {
                vec![(key(SERIES, id.as_bytes()), Some(encoded.clone()))]
            }
            ViewItem::Cohort {
                key: cohort,
                aggregator,
                encoded,
            } => vec![(
                key(COHORT, cohort.as_bytes()),
                Some(with_partition(PartitionId::Cohort(*aggregator), encoded)),
            )],
            ViewItem::Fleet { partition, sums } => {
                vec![(
                    key(FLEET, &partition.stored().to_be_bytes()),
                    Some(sums.encode()),
                )]
            }
            ViewItem::Partition(stamp) => vec![(
                key(PARTITION, &stamp.partition.stored().to_be_bytes()),
                Some(serde_json::to_vec(stamp).expect("stamps serialise")),
            )],
            ViewItem::Alert(alert) => vec![(
                key(ALERT, alert.alert_id.as_bytes()),
                Some(serde_json::to_vec(alert).expect("alerts serialise")),
            )],
        }
    }
}

/// A record of the view's topic that does not read as one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("group view record with key {key:?}: {reason}")]
pub struct ViewRecordError {
    pub key: String,
    pub reason: String,
}

/// The group's state as the view's topic tells it.
#[derive(Debug, Default, Clone)]
pub struct GroupState {
    pub vehicles: HashMap<String, VehicleState>,
    /// Cohort key -> (its aggregator, one series per hazard class).
    pub cohorts: BTreeMap<String, (i32, ByClass<Series>)>,
    pub fleet: HashMap<PartitionId, FleetSums>,
    pub partitions: BTreeMap<PartitionId, PartitionStamp>,
    pub alerts: BTreeMap<String, RegressionAlert>,
}

impl GroupState {
    /// Applies one record; a record that does not read is refused and changes nothing.
    pub fn apply(
        &mut self,
        params: FleetRelativeParams,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), ViewRecordError> {
        let refuse = |reason: &str| ViewRecordError {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        };
        let (&tag, rest) = key.split_first().ok_or_else(|| refuse("empty key"))?;
        let text = |bytes: &[u8]| {
            std::str::from_utf8(bytes)
                .map(str::to_string)
                .map_err(|_| refuse("not UTF-8"))
        };
        let partition_of = |bytes: &[u8]| -> Result<(PartitionId, Vec<u8>), ViewRecordError> {
            let (head, tail) = bytes.split_at_checked(4).ok_or_else(|| refuse("short"))?;
            let number = i32::from_be_bytes(head.try_into().expect("4 bytes"));
            match PartitionId::from_stored(number) {
                Some(crate::partition_id::StoredPartition::Partition(partition)) => {
                    Ok((partition, tail.to_vec()))
                }
                _ => Err(refuse("not a partition number")),
            }
        };
        match (tag, value) {
            (VEHICLE, None) => {
                self.vehicles.remove(&text(rest)?);
            }
            (VEHICLE, Some(value)) => {
                let (partition, meta) = partition_of(value)?;
                let meta: VehicleMeta =
                    serde_json::from_slice(&meta).map_err(|e| refuse(&e.to_string()))?;
                let vehicle = self.vehicles.entry(text(rest)?).or_default();
                vehicle.partition = partition;
                vehicle.meta = meta;
            }
            (BIN, value) => {
                let (start, id) = rest.split_at_checked(8).ok_or_else(|| refuse("short"))?;
                let start = i64::from_be_bytes(start.try_into().expect("8 bytes"));
                let id = text(id)?;
                match value {
                    None => {
                        if let Some(vehicle) = self.vehicles.get_mut(&id) {
                            vehicle.bins.remove(&start);
                        }
                    }
                    Some(value) => {
                        let stats = BinStats::decode(value).ok_or_else(|| refuse("bin"))?;
                        let vehicle = self.vehicles.entry(id).or_default();
                        if start == RETIRED_BIN {
                            vehicle.retired = stats;
                        } else {
                            vehicle.bins.insert(start, stats);
                        }
                    }
                }
            }
            (SERIES, None) => {
                if let Some(vehicle) = self.vehicles.get_mut(&text(rest)?) {
                    vehicle.series = None;
                }
            }
            (SERIES, Some(value)) => {
                let series = decode_series(params, value).map_err(|e| refuse(&e.to_string()))?;
                self.vehicles.entry(text(rest)?).or_default().series = Some(Box::new(series));
            }
            (COHORT, None) => {
                self.cohorts.remove(&text(rest)?);
            }
            (COHORT, Some(value)) => {
                let (partition, encoded) = partition_of(value)?;
                let Some(aggregator) = partition.cohort() else {
                    return Err(refuse("not a cohort aggregator's partition"));
                };
                let series = decode_series(params, &encoded).map_err(|e| refuse(&e.to_string()))?;
                self.cohorts.insert(text(rest)?, (aggregator, series));
            }
            (FLEET | PARTITION, value) => {
                let (partition, _) = partition_of(rest)?;
                match (tag, value) {
                    (FLEET, Some(value)) => {
                        let sums = FleetSums::decode(value).ok_or_else(|| refuse("sums"))?;
                        self.fleet.insert(partition, sums);
                    }
                    (FLEET, None) => {
                        self.fleet.remove(&partition);
                    }
                    (_, Some(value)) => {
                        let stamp: PartitionStamp =
                            serde_json::from_slice(value).map_err(|e| refuse(&e.to_string()))?;
                        self.partitions.insert(partition, stamp);
                    }
                    (_, None) => {
                        self.partitions.remove(&partition);
                    }
                }
            }
            (ALERT, None) => {
                self.alerts.remove(&text(rest)?);
            }
            (ALERT, Some(value)) => {
                let alert: RegressionAlert =
                    serde_json::from_slice(value).map_err(|e| refuse(&e.to_string()))?;
                self.alerts.insert(text(rest)?, alert);
            }
            _ => return Err(refuse("unknown kind")),
        }
        Ok(())
    }

    /// Applies every record of `items` (as a reader of the topic would, in order).
    pub fn apply_items(&mut self, params: FleetRelativeParams, items: &[ViewItem]) {
        for item in items {
            for (key, value) in item.records() {
                self.apply(params, &key, value.as_deref())
                    .expect("records this module wrote read back");
            }
        }
    }
}

/// Everything the view needs of one vehicle (after it was given to this process, or came back
/// into memory).
pub fn items_of_vehicle(id: &str, vehicle: &VehicleState) -> Vec<ViewItem> {
    let mut items = vec![ViewItem::Vehicle {
        id: id.to_string(),
        partition: vehicle.partition,
        meta: vehicle.meta.clone(),
    }];
    let retired =
        (vehicle.retired != BinStats::default()).then_some((RETIRED_BIN, vehicle.retired));
    for (start_ms, stats) in retired
        .into_iter()
        .chain(vehicle.bins.iter().map(|(b, s)| (*b, *s)))
    {
        items.push(ViewItem::Bin {
            id: id.to_string(),
            start_ms,
            stats,
        });
    }
    if let Some(series) = &vehicle.series {
        let mut encoded = Vec::new();
        encode_series(series, &mut encoded);
        items.push(ViewItem::Series {
            id: id.to_string(),
            encoded,
        });
    }
    items
}

/// The group view as the HTTP edge reads it: the state, and how far its reader has got.
#[derive(Debug, Default)]
pub struct SharedView {
    pub state: std::sync::RwLock<GroupState>,
    pub progress: std::sync::Mutex<ViewProgress>,
}

impl SharedView {
    pub fn progress(&self) -> ViewProgress {
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// How far the reader of the view's topic has got.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct ViewProgress {
    pub topic: String,
    /// Records applied, and refused (they did not read; counted, logged, skipped).
    pub records: u64,
    pub refused: u64,
    /// When the reader last stood at the end of what is committed to the topic (`None`: not
    /// yet since it started); the view is complete as of then.
    pub caught_up_at_ms: Option<i64>,
    /// The reader's last error (cleared by the next record), such as a missing topic.
    pub error: Option<String>,
}
