//! The RocksDB state store: one column family per kind of state, one atomic batch per commit.
//!
//! Owns the on-disk layout (see `keys`), writing a [`StateDelta`] together with the source
//! positions in a single `WriteBatch`, restoring the engine's state at start-up, and a canonical
//! JSON snapshot of everything (for `safetel inspect` and the crash tests). Knows nothing of Kafka.

pub mod keys;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch};
use serde_json::{Value, json};

use crate::engine::runner::CommitTarget;
use crate::engine::{
    BinStats, PartitionState, RestoredState, StateDelta, VehicleMeta, VehicleState, id_hash,
};

const CF_VEHICLES: &str = "vehicles";
const CF_BINS: &str = "bins";
const CF_FACTS: &str = "facts";
const CF_SEEN: &str = "seen";
const CF_POSITIONS: &str = "positions";
const COLUMN_FAMILIES: [&str; 5] = [CF_VEHICLES, CF_BINS, CF_FACTS, CF_SEEN, CF_POSITIONS];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB at {path}: {source}")]
    Open {
        path: String,
        source: rocksdb::Error,
    },
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt state in column family `{cf}`: {detail}")]
    Corrupt { cf: &'static str, detail: String },
}

/// A key and value as RocksDB returns them.
pub type RawEntry = (Box<[u8]>, Box<[u8]>);

pub struct Store {
    db: DB,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db =
            DB::open_cf_descriptors(&options, path, cfs).map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Store { db })
    }

    fn cf(&self, name: &'static str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// Writes one commit: every change and the positions, atomically.
    pub fn write(&self, delta: &StateDelta) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let (vehicles, bins, facts, seen, positions) = (
            self.cf(CF_VEHICLES),
            self.cf(CF_BINS),
            self.cf(CF_FACTS),
            self.cf(CF_SEEN),
            self.cf(CF_POSITIONS),
        );
        for (partition, id, meta) in &delta.vehicles {
            let value = serde_json::to_vec(meta).expect("meta serialises");
            batch.put_cf(vehicles, keys::vehicle(*partition, id), value);
        }
        for (partition, id, bin, stats) in &delta.bins {
            batch.put_cf(bins, keys::bin(*partition, id, *bin), stats.encode());
        }
        for fact in &delta.facts {
            let key = keys::fact(
                fact.partition,
                &fact.vehicle_id,
                fact.event_time_ms,
                fact.id_hash,
            );
            batch.put_cf(facts, key, &fact.bytes);
        }
        // Additions first: an id added since the last commit may already be below the cutoff,
        // and the range delete must remove it as the engine's retain did.
        for (partition, time, hash) in &delta.seen_added {
            batch.put_cf(seen, keys::seen(*partition, *time, *hash), []);
        }
        for (partition, cutoff) in &delta.seen_pruned {
            let from = keys::seen(*partition, i64::MIN, 0);
            let to = keys::seen(*partition, *cutoff, 0);
            batch.delete_range_cf(seen, from, to);
        }
        for (partition, next_offset, watermark) in &delta.positions {
            let mut value = next_offset.to_le_bytes().to_vec();
            value.extend_from_slice(&watermark.to_le_bytes());
            batch.put_cf(positions, keys::partition_prefix(*partition), value);
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Everything the engine needs to continue where the last commit left off.
    pub fn restore(&self) -> Result<RestoredState, StoreError> {
        let mut vehicles: HashMap<String, VehicleState> = HashMap::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_VEHICLES), IteratorMode::Start)
        {
            let (key, value) = item?;
            let (partition, id, _) =
                keys::split_vehicle(&key).ok_or_else(|| corrupt(CF_VEHICLES, &key))?;
            let meta: VehicleMeta =
                serde_json::from_slice(&value).map_err(|_| corrupt(CF_VEHICLES, &key))?;
            let vehicle = vehicles.entry(id).or_default();
            vehicle.partition = partition;
            vehicle.meta = meta;
        }
        for item in self.db.iterator_cf(self.cf(CF_BINS), IteratorMode::Start) {
            let (key, value) = item?;
            let (partition, id, bin) =
                keys::split_bin(&key).ok_or_else(|| corrupt(CF_BINS, &key))?;
            let stats = BinStats::decode(&value).ok_or_else(|| corrupt(CF_BINS, &key))?;
            let vehicle = vehicles.entry(id).or_default();
            vehicle.partition = partition;
            vehicle.bins.insert(bin, stats);
        }
        let mut partitions: HashMap<i32, PartitionState> = HashMap::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_POSITIONS), IteratorMode::Start)
        {
            let (key, value) = item?;
            let partition = key
                .get(..4)
                .and_then(|k| k.try_into().ok())
                .map(i32::from_be_bytes)
                .ok_or_else(|| corrupt(CF_POSITIONS, &key))?;
            if value.len() != 16 {
                return Err(corrupt(CF_POSITIONS, &key));
            }
            let state = partitions.entry(partition).or_default();
            state.next_offset = i64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
            state.watermark_ms = i64::from_le_bytes(value[8..].try_into().expect("8 bytes"));
        }
        for item in self.db.iterator_cf(self.cf(CF_SEEN), IteratorMode::Start) {
            let (key, _) = item?;
            let (partition, time, hash) =
                keys::split_seen(&key).ok_or_else(|| corrupt(CF_SEEN, &key))?;
            partitions
                .entry(partition)
                .or_default()
                .seen
                .insert(hash, time);
        }
        Ok(RestoredState {
            vehicles: vehicles.into_iter().collect(),
            partitions,
        })
    }

    /// Raw facts (original record bytes) in key order: partition, vehicle, event time.
    pub fn facts(&self) -> impl Iterator<Item = Result<RawEntry, rocksdb::Error>> + '_ {
        self.db.iterator_cf(self.cf(CF_FACTS), IteratorMode::Start)
    }

    /// A canonical JSON picture of the whole store: equal stores give equal snapshots.
    pub fn snapshot(&self) -> Result<Value, StoreError> {
        let restored = self.restore()?;
        let vehicles: BTreeMap<String, Value> = restored
            .vehicles
            .into_iter()
            .map(|(id, v)| {
                let bins: BTreeMap<String, &BinStats> = v.bins.iter().map(|(b, s)| (b.to_string(), s)).collect();
                (id, json!({"partition": v.partition, "meta": v.meta, "bins": bins, "totals": v.totals()}))
            })
            .collect();
        let partitions: BTreeMap<String, Value> = restored
            .partitions
            .into_iter()
            .map(|(p, s)| {
                let mut seen: Vec<(i64, u64)> = s.seen.into_iter().map(|(h, t)| (t, h)).collect();
                seen.sort_unstable();
                let seen_bytes: Vec<u8> = seen.iter().flat_map(|(t, h)| [t.to_le_bytes(), h.to_le_bytes()]).flatten().collect();
                let value = json!({"next_offset": s.next_offset, "watermark_ms": s.watermark_ms,
                    "seen": seen.len(), "seen_digest": format!("{:016x}", id_hash(&[&seen_bytes]))});
                (p.to_string(), value)
            })
            .collect();
        let (mut fact_count, mut digest) = (0u64, 0u64);
        for item in self.facts() {
            let (key, value) = item?;
            fact_count += 1;
            digest = id_hash(&[&digest.to_le_bytes(), &key, &value]);
        }
        Ok(json!({"vehicles": vehicles, "partitions": partitions,
            "facts": {"count": fact_count, "digest": format!("{digest:016x}")}}))
    }
}

fn corrupt(cf: &'static str, key: &[u8]) -> StoreError {
    StoreError::Corrupt {
        cf,
        detail: format!("unreadable entry at key {key:02x?}"),
    }
}

impl CommitTarget for Store {
    fn commit(&mut self, delta: StateDelta) -> Result<(), String> {
        self.write(&delta).map_err(|e| e.to_string())
    }
}
