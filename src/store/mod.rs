//! The RocksDB state store: one column family per kind of state, one atomic batch per commit.
//!
//! Owns the on-disk layout (keys in `keys`, values in `codec`, which also says how a store of an
//! earlier format is migrated when it is opened): writing a [`StateDelta`] together with the source
//! positions in a single `WriteBatch`, restoring the engine's state at start-up, reading facts
//! back, and a canonical JSON snapshot of everything (for `safetel inspect` and the crash tests).
//! Facts and seen record ids are written as one segment per vehicle (facts) or partition (ids)
//! and commit, not one key per record: that keeps commits cheap at a million records a second.
//! A commit is a list of [`Op`]s (puts and deletes), so that a changelog can carry exactly what
//! RocksDB gets; a partition's state can be replaced as a unit (`replace_partition`) or
//! restored alone (`restore_partitions`). Knows nothing of Kafka.

pub mod attributes;
pub mod codec;
pub mod commit;
pub mod history;
pub mod keys;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch};
use serde_json::{Value, json};

use crate::engine::retention::StoredVehicle;
use crate::engine::state::{FactSegment, SeenSegment};
use crate::engine::{
    BinStats, PartitionId, PartitionState, Prior, RETIRED_BIN, RestoredState, StateDelta,
    StoredPartition, VehicleState, fact_records, id_hash,
};
use crate::model::RegressionAlert;
use crate::refit::intervals::TimelineItem;
use crate::refit::run::ModelRun;
use crate::stream::runner::{CommitError, CommitTarget};
use codec::{
    Alerts, Bins, ChangelogOffsets, Cohorts, FactBins, Facts, FactsByBin, Family, Fleet, ModelRuns,
    Positions, Priors, Rejected, Seen, Series, Timeline, Vehicles, decode, encode,
};

const CF_VEHICLES: &str = Vehicles::CF;
const CF_BINS: &str = Bins::CF;
/// Facts before retention, by vehicle and offset: read, never written (nor expired) now.
const CF_FACTS: &str = Facts::CF;
/// Facts by bin of record time, so that a partition's expired ones are one key range.
const CF_FACTS_BY_BIN: &str = FactsByBin::CF;
const CF_FLEET: &str = Fleet::CF;
/// The refit's timeline items by bin of record time (the facts' bins), as the facts' segments.
const CF_TIMELINE: &str = Timeline::CF;
/// Per bin of record time, the input offset of the first fact kept under it.
const CF_FACT_BINS: &str = FactBins::CF;
/// The input offsets of rejected records, one entry per commit keyed by its last offset.
const CF_REJECTED: &str = Rejected::CF;
const CF_SEEN: &str = Seen::CF;
const CF_POSITIONS: &str = Positions::CF;
const CF_SERIES: &str = Series::CF;
const CF_PRIORS: &str = Priors::CF;
const CF_MODEL_RUNS: &str = ModelRuns::CF;
const CF_ALERTS: &str = Alerts::CF;
const CF_COHORTS: &str = Cohorts::CF;
const CF_CHANGELOG: &str = ChangelogOffsets::CF;
/// The store's own records: its format ([`codec::FORMAT_KEY`]) and a migration's progress.
const CF_META: &str = "meta";
/// The column families only this store keeps (besides [`PARTITIONED`]).
const LOCAL: [&str; 5] = [CF_PRIORS, CF_MODEL_RUNS, CF_ALERTS, CF_CHANGELOG, CF_META];
/// Entries a format migration rewrites per batch (with its progress, so that a migration cut
/// short goes on where it stopped).
const MIGRATION_BATCH: usize = 10_000;

/// The column families whose keys start with a partition number and that a partition's
/// changelog carries, in the order of their one-byte code there. Priors come from refits (each
/// process's own), alerts are a log of what was published: both stay local.
pub const PARTITIONED: [&str; 12] = [
    CF_VEHICLES,
    CF_BINS,
    CF_FACTS,
    CF_SEEN,
    CF_POSITIONS,
    CF_SERIES,
    CF_COHORTS,
    CF_FACTS_BY_BIN,
    CF_FLEET,
    CF_TIMELINE,
    CF_FACT_BINS,
    CF_REJECTED,
];

/// Partitioned column families the changelog does not carry: the facts (the accepted records'
/// bytes, for the warehouse) and the seen record ids (the duplicate check's) stay in the store
/// that accepted them; another process that takes the partition rebuilds them from the input
/// topic with the ledger the changelog does carry ([`CF_FACT_BINS`], [`CF_REJECTED`]). (Older
/// changelogs that carried them still restore.)
const NOT_LOGGED: [&str; 3] = [CF_FACTS, CF_FACTS_BY_BIN, CF_SEEN];

/// A stored key and its value ([`Store::dump`]).
pub type Entry = (Vec<u8>, Vec<u8>);

/// A change as its changelog carries it ([`Op::changelog_record`]): partition, key, value.
pub type ChangelogRecord<'a> = (PartitionId, Vec<u8>, Option<&'a [u8]>);

/// One change to the store: `value` `None` deletes the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub cf: &'static str,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Op {
    fn put(cf: &'static str, key: Vec<u8>, value: Vec<u8>) -> Op {
        Op {
            cf,
            key,
            value: Some(value),
        }
    }

    fn delete(cf: &'static str, key: Vec<u8>) -> Op {
        Op {
            cf,
            key,
            value: None,
        }
    }

    /// Puts `value` under `key` in its family's stored form.
    fn of<F: Family>(key: F::Key<'_>, value: &F::Value) -> Op {
        Op::put(F::CF, F::key(key), encode::<F>(value))
    }

    /// The partition whose changelog carries this change, if any.
    pub fn changelog_partition(&self) -> Option<PartitionId> {
        (PARTITIONED.contains(&self.cf) && !NOT_LOGGED.contains(&self.cf))
            .then(|| keys::partition_of(&self.key))
            .flatten()
    }

    /// The changelog record this change is carried as: the partition whose changelog takes it,
    /// the record's key (the column family's code, then the store key) and its value (`None`:
    /// a tombstone). `None` for a change no changelog carries.
    pub fn changelog_record(&self) -> Option<ChangelogRecord<'_>> {
        let partition = self.changelog_partition()?;
        let mut key = Vec::with_capacity(self.key.len() + 1);
        key.push(self.cf_code()?);
        key.extend_from_slice(&self.key);
        Some((partition, key, self.value.as_deref()))
    }

    /// The column family's code in the changelog.
    pub fn cf_code(&self) -> Option<u8> {
        PARTITIONED
            .iter()
            .position(|cf| *cf == self.cf)
            .map(|i| i as u8)
    }

    /// The change a changelog record stands for: its key is the column family's code and then
    /// the store key; an empty value deletes. `format` is the store format the record was
    /// written in (0: before version bytes, whose values are rewritten in the current one).
    pub fn from_changelog(key: &[u8], value: Option<&[u8]>, format: u8) -> Option<Op> {
        let (&code, store_key) = key.split_first()?;
        let cf = PARTITIONED.get(code as usize)?;
        let value = match value.filter(|v| !v.is_empty()) {
            None => None,
            Some(v) if format == 0 => Some(codec::migrate_value(cf, v)?),
            Some(v) if format == codec::FORMAT => Some(v.to_vec()),
            Some(_) => return None,
        };
        Some(Op {
            cf,
            key: store_key.to_vec(),
            value,
        })
    }
}

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
    #[error(
        "the store was written by a newer safetel (store format {found}; this one reads up to {known})"
    )]
    NewerFormat { found: u8, known: u8 },
}

/// What RocksDB's memtables may take in all.
const MEMTABLE_BUDGET_BYTES: usize = 32 << 20;
/// Column families written by bin (event time), each bin spread over a partition's vehicles:
/// the accepted records and the refit's timeline.
const TIME_ORDERED: [&str; 2] = [CF_FACTS_BY_BIN, CF_TIMELINE];
/// Level-0 files of those merged at a time (RocksDB's default is 4).
const TIME_ORDERED_L0_FILES: i32 = 12;

/// What RocksDB's block cache may take in all.
const BLOCK_CACHE_BYTES: usize = 32 << 20;

/// A RocksDB entry.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// What the history cache may hold unless configured (`state.cache_mb`).
pub const DEFAULT_HISTORY_CACHE_BYTES: usize = 64 << 20;

pub struct Store {
    db: DB,
    /// Vehicles' closed bins read back for the pages.
    history: history::HistoryCache,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Memtables of all column families together stay within this (else each of the eleven
        // may hold 64 MB): memory follows the live state, not the write volume.
        options.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
        // Column families written rarely (positions, fleet sums) would otherwise keep every
        // write-ahead log file alive: past this, the oldest one's memtables are flushed.
        options.set_max_total_wal_size(2 * MEMTABLE_BUDGET_BYTES as u64);
        // One block cache for every column family (each would otherwise get its own 32 MB).
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // Index and filter blocks in that cache too, not held per file beside it.
        table.set_cache_index_and_filter_blocks(true);
        let cfs = PARTITIONED.iter().chain(&LOCAL).map(|name| {
            let mut cf = Options::default();
            cf.set_block_based_table_factory(&table);
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            // The first two levels hold what is rewritten soon (attributes, open bins, series,
            // the latest facts): written uncompressed, their flushes and first compactions
            // spend no CPU on LZ4; the levels below, where state stays, are compressed.
            cf.set_compression_per_level(&[
                rocksdb::DBCompressionType::None,
                rocksdb::DBCompressionType::None,
                rocksdb::DBCompressionType::Lz4,
                rocksdb::DBCompressionType::Lz4,
                rocksdb::DBCompressionType::Lz4,
                rocksdb::DBCompressionType::Lz4,
                rocksdb::DBCompressionType::Lz4,
            ]);
            // Files that retention has filled with deletes are compacted soon, so the disk
            // follows the live state: at least half of any 1000 consecutive entries deleted.
            cf.add_compact_on_deletion_collector_factory(1000, 500, 0.5);
            if TIME_ORDERED.contains(name) {
                // Each flush of these spans the current bin of every vehicle of a partition,
                // so it overlaps all the bin's earlier data in level 1: merged four files at a
                // time, the bin is rewritten over and over, and more often the larger the fleet
                // (its bin is larger). Merged twelve at a time, a third as often; only pages,
                // the refit, the warehouse and restores read them (BENCHMARKS.md, fleet scale).
                cf.set_level_zero_file_num_compaction_trigger(TIME_ORDERED_L0_FILES);
                cf.set_level_zero_slowdown_writes_trigger(3 * TIME_ORDERED_L0_FILES);
                cf.set_level_zero_stop_writes_trigger(4 * TIME_ORDERED_L0_FILES);
            }
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db =
            DB::open_cf_descriptors(&options, path, cfs).map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let store = Store {
            db,
            history: history::HistoryCache::new(DEFAULT_HISTORY_CACHE_BYTES),
        };
        store.migrate_format()?;
        Ok(store)
    }

    /// Reads vehicles' history for the pages through `cache` (`state.cache_mb`).
    pub fn with_history_cache(mut self, cache: history::HistoryCache) -> Store {
        self.history = cache;
        self
    }

    /// What the history cache holds and has done.
    pub fn history_cache_stats(&self) -> history::CacheStats {
        self.history.stats()
    }

    /// The bins the store keeps for `vehicle_id` under `partition`, its retired sum aside.
    pub fn vehicle_bins(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
    ) -> Result<crate::engine::BinMap, StoreError> {
        let mut bins = crate::engine::BinMap::default();
        self.for_each_stored_bin(partition, vehicle_id, |bin, stats| {
            if bin != RETIRED_BIN {
                bins.insert(bin, stats);
            }
        })?;
        Ok(bins)
    }

    /// Calls `f` with each bin the store keeps for `vehicle_id` under `partition`, in order,
    /// its retired sum (at [`RETIRED_BIN`]) first.
    fn for_each_stored_bin(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
        mut f: impl FnMut(i64, BinStats),
    ) -> Result<(), StoreError> {
        let key = Vehicles::key((partition, vehicle_id));
        let mut read = rocksdb::ReadOptions::default();
        read.set_iterate_range(rocksdb::PrefixRange(key.as_slice()));
        for item in self.db.iterator_cf_opt(
            self.cf(CF_BINS),
            read,
            IteratorMode::From(&key, rocksdb::Direction::Forward),
        ) {
            let (bin_key, value) = item?;
            let (_, _, bin) =
                keys::split_bin(&bin_key).ok_or_else(|| corrupt(CF_BINS, &bin_key))?;
            f(
                bin,
                decode::<Bins>(&value).ok_or_else(|| corrupt(CF_BINS, &bin_key))?,
            );
        }
        Ok(())
    }

    /// The vehicles of `delta` whose bins it changes, if the history cache holds anything
    /// (else nothing is gathered: [`history::HistoryCache::after_write`] needs none).
    fn history_to_invalidate(&self, delta: &StateDelta) -> Option<Vec<(PartitionId, String)>> {
        self.history.holds_any().then(|| delta.vehicles_with_bins())
    }

    /// Brings a store of an earlier format to [`codec::FORMAT`]: every value of format 0 (no
    /// version byte) is rewritten, column family by column family, in batches that record how
    /// far they got; then the format is recorded. A new store has nothing to rewrite.
    fn migrate_format(&self) -> Result<(), StoreError> {
        let meta = self.cf(CF_META);
        match self.db.get_cf(meta, codec::FORMAT_KEY)?.as_deref() {
            Some([format]) if *format == codec::FORMAT => return Ok(()),
            Some([format]) if *format > codec::FORMAT => {
                return Err(StoreError::NewerFormat {
                    found: *format,
                    known: codec::FORMAT,
                });
            }
            Some(_) => return Err(corrupt(CF_META, codec::FORMAT_KEY)),
            None => {}
        }
        let mut rewritten = 0usize;
        for cf in PARTITIONED
            .iter()
            .chain(&LOCAL)
            .filter(|cf| **cf != CF_META)
        {
            rewritten += self.migrate_family(cf)?;
        }
        if rewritten > 0 {
            tracing::info!(
                values = rewritten,
                format = codec::FORMAT,
                "store format migrated: every value now starts with its version byte"
            );
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, codec::FORMAT_KEY, [codec::FORMAT]);
        for cf in PARTITIONED.iter().chain(&LOCAL) {
            batch.delete_cf(meta, migration_key(cf));
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Rewrites the format-0 values of `cf` from where an earlier migration stopped, if one did.
    fn migrate_family(&self, cf: &'static str) -> Result<usize, StoreError> {
        let meta = self.cf(CF_META);
        let progress_key = migration_key(cf);
        let done_through = self.db.get_cf(meta, &progress_key)?;
        let mode = match &done_through {
            Some(key) => IteratorMode::From(key, rocksdb::Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut rewritten = 0;
        let mut batch = WriteBatch::default();
        let mut last: Option<Box<[u8]>> = None;
        for item in self.db.iterator_cf(self.cf(cf), mode) {
            let (key, value) = item?;
            if done_through.as_deref() == Some(&key[..]) {
                continue;
            }
            let migrated = codec::migrate_value(cf, &value).ok_or_else(|| corrupt(cf, &key))?;
            batch.put_cf(self.cf(cf), &key, migrated);
            rewritten += 1;
            last = Some(key);
            if batch.len() >= MIGRATION_BATCH {
                batch.put_cf(
                    meta,
                    &progress_key,
                    last.as_deref().expect("a key was rewritten"),
                );
                self.db.write(std::mem::take(&mut batch))?;
            }
        }
        if let Some(last) = last {
            batch.put_cf(meta, &progress_key, last);
            self.db.write(batch)?;
        }
        Ok(rewritten)
    }

    /// Writes every column family's memtable to its files (the write-ahead log then holds
    /// nothing the files do not).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in PARTITIONED.iter().chain(&LOCAL) {
            self.db.flush_cf(self.cf(name))?;
        }
        Ok(())
    }

    fn cf(&self, name: &'static str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// Writes one commit: every change and the positions, atomically, straight into one batch
    /// ([`commit::BatchChanges`]); the delta is let go before the batch is written.
    pub fn write(&self, mut delta: StateDelta) -> Result<(), StoreError> {
        commit::sort_by_key(&mut delta);
        let changed = self.history_to_invalidate(&delta);
        let mut changes =
            commit::BatchChanges::with_capacity(self, delta.approximate_batch_bytes());
        self.changes(&mut delta, &mut changes)?;
        drop(delta);
        self.db.write(changes.batch)?;
        self.history.after_write(changed.as_deref());
        Ok(())
    }

    /// Writes changes atomically, with each partition's last changelog offset (local record of
    /// how far the changelog reflects this store).
    pub fn apply(
        &self,
        ops: Vec<Op>,
        changelog_offsets: &[(PartitionId, i64)],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let mut changed = self.history.holds_any().then(Vec::new);
        for op in ops {
            if let (Some(changed), true) = (changed.as_mut(), op.cf == CF_BINS)
                && let Some((partition, vehicle_id, _)) = keys::split_bin(&op.key)
                && changed.last() != Some(&(partition, vehicle_id.clone()))
            {
                changed.push((partition, vehicle_id));
            }
            match op.value {
                Some(value) => batch.put_cf(self.cf(op.cf), &op.key, value),
                None => batch.delete_cf(self.cf(op.cf), &op.key),
            }
        }
        let changelog = self.cf(CF_CHANGELOG);
        for (partition, offset) in changelog_offsets {
            batch.put_cf(
                changelog,
                ChangelogOffsets::key(*partition),
                encode::<ChangelogOffsets>(offset),
            );
        }
        self.db.write(batch)?;
        self.history.after_write(changed.as_deref());
        Ok(())
    }

    /// The last changelog offset this store reflects, per partition it recorded one for.
    pub fn changelog_offsets(&self) -> Result<HashMap<PartitionId, i64>, StoreError> {
        let mut offsets = HashMap::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_CHANGELOG), IteratorMode::Start)
        {
            let (key, value) = item?;
            let partition = keys::partition_of(&key).ok_or_else(|| corrupt(CF_CHANGELOG, &key))?;
            let offset =
                decode::<ChangelogOffsets>(&value).ok_or_else(|| corrupt(CF_CHANGELOG, &key))?;
            offsets.insert(partition, offset);
        }
        Ok(offsets)
    }

    /// Replaces a partition's state with what its changelog holds: deletes every key of the
    /// partition in the column families the changelog carries, then writes `ops`, and records
    /// `changelog_offset` as the last offset reflected; all in one batch.
    pub fn replace_partition(
        &self,
        partition: PartitionId,
        ops: &[Op],
        changelog_offset: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let from = keys::partition_prefix(partition);
        let to = keys::partition_end(partition);
        for cf in PARTITIONED {
            batch.delete_range_cf(self.cf(cf), from, to);
        }
        for op in ops {
            match &op.value {
                Some(value) => batch.put_cf(self.cf(op.cf), &op.key, value),
                None => batch.delete_cf(self.cf(op.cf), &op.key),
            }
        }
        if let Some(offset) = changelog_offset {
            batch.put_cf(
                self.cf(CF_CHANGELOG),
                ChangelogOffsets::key(partition),
                encode::<ChangelogOffsets>(&offset),
            );
        }
        self.db.write(batch)?;
        // The whole partition changed.
        self.history.after_write(None);
        Ok(())
    }

    fn put_priors(&self, batch: &mut WriteBatch, priors: &[(PartitionId, String, Prior)]) {
        let cf = self.cf(CF_PRIORS);
        for (partition, vehicle, prior) in priors {
            batch.put_cf(
                cf,
                Priors::key((*partition, vehicle.as_str())),
                encode::<Priors>(prior),
            );
        }
    }

    fn put_model_run(&self, batch: &mut WriteBatch, run: &ModelRun) {
        batch.put_cf(
            self.cf(CF_MODEL_RUNS),
            ModelRuns::key(run.outline.run_id),
            encode::<ModelRuns>(run),
        );
    }

    /// Writes a refit's outcome on its own (when `run` is not holding the store): the model run,
    /// and the priors if there are any (a refit that did not converge brings none).
    pub fn write_refit(
        &self,
        priors: &[(PartitionId, String, Prior)],
        run: &ModelRun,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put_priors(&mut batch, priors);
        self.put_model_run(&mut batch, run);
        self.db.write(batch)?;
        Ok(())
    }

    /// Retention of what only this store keeps: deletes alerts detected before
    /// `alerts_before_ms` (event time) and all but the newest `model_runs_kept` model runs.
    /// Returns (alerts, model runs) deleted.
    pub fn prune_records(
        &self,
        alerts_before_ms: i64,
        model_runs_kept: usize,
    ) -> Result<(usize, usize), StoreError> {
        let mut batch = WriteBatch::default();
        let mut alerts = 0;
        for item in self.db.iterator_cf(self.cf(CF_ALERTS), IteratorMode::Start) {
            let (key, value) = item?;
            let alert = decode::<Alerts>(&value).ok_or_else(|| corrupt(CF_ALERTS, &key))?;
            if alert.detected_at < alerts_before_ms {
                batch.delete_cf(self.cf(CF_ALERTS), &key);
                alerts += 1;
            }
        }
        let mut runs = 0;
        let newest_first = self
            .db
            .iterator_cf(self.cf(CF_MODEL_RUNS), IteratorMode::End);
        for item in newest_first.skip(model_runs_kept) {
            let (key, _) = item?;
            batch.delete_cf(self.cf(CF_MODEL_RUNS), &key);
            runs += 1;
        }
        self.db.write(batch)?;
        Ok((alerts, runs))
    }

    /// The largest event time accepted on any partition (its watermark), if any record was.
    pub fn latest_event_time(&self) -> Result<Option<i64>, StoreError> {
        let mut latest = None;
        for item in self
            .db
            .iterator_cf(self.cf(CF_POSITIONS), IteratorMode::Start)
        {
            let (key, value) = item?;
            match keys::partition_of(&key) {
                Some(p) if p.is_source() => {}
                _ => continue,
            }
            let watermark = decode::<Positions>(&value)
                .ok_or_else(|| corrupt(CF_POSITIONS, &key))?
                .watermark_ms;
            if watermark != i64::MIN {
                latest = Some(latest.map_or(watermark, |l: i64| l.max(watermark)));
            }
        }
        Ok(latest)
    }

    /// Every model run recorded, oldest first.
    pub fn model_runs(&self) -> Result<Vec<ModelRun>, StoreError> {
        let mut runs = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_MODEL_RUNS), IteratorMode::Start)
        {
            let (key, value) = item?;
            runs.push(decode::<ModelRuns>(&value).ok_or_else(|| corrupt(CF_MODEL_RUNS, &key))?);
        }
        Ok(runs)
    }

    /// The latest model run recorded, if any.
    pub fn last_model_run(&self) -> Result<Option<ModelRun>, StoreError> {
        let mut newest_first = self
            .db
            .iterator_cf(self.cf(CF_MODEL_RUNS), IteratorMode::End);
        match newest_first.next() {
            Some(item) => {
                let (key, value) = item?;
                let run =
                    decode::<ModelRuns>(&value).ok_or_else(|| corrupt(CF_MODEL_RUNS, &key))?;
                Ok(Some(run))
            }
            None => Ok(None),
        }
    }

    /// Every alert published, by alert id.
    pub fn alerts(&self) -> Result<Vec<RegressionAlert>, StoreError> {
        let mut alerts = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_ALERTS), IteratorMode::Start) {
            let (key, value) = item?;
            alerts.push(decode::<Alerts>(&value).ok_or_else(|| corrupt(CF_ALERTS, &key))?);
        }
        Ok(alerts)
    }

    /// Everything the engine needs to continue where the last commit left off.
    pub fn restore(&self) -> Result<RestoredState, StoreError> {
        self.restore_where(|_| true, true)
    }

    /// The state of some partitions only (and the priors, which are not per partition).
    pub fn restore_partitions(
        &self,
        partitions: &[PartitionId],
    ) -> Result<RestoredState, StoreError> {
        self.restore_where(|p| partitions.contains(&p), false)
    }

    /// The entries of a column family whose keys belong to a wanted partition.
    fn partition_entries<'a>(
        &'a self,
        cf: &'static str,
        wanted: &'a impl Fn(PartitionId) -> bool,
    ) -> impl Iterator<Item = Result<KeyValue, rocksdb::Error>> + 'a {
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::Start)
            .filter(move |item| match item {
                Ok((key, _)) => keys::partition_of(key).is_some_and(wanted),
                Err(_) => true,
            })
    }

    /// The state of the `wanted` partitions; `everything`: all of them, when cohort state of an
    /// earlier safetel is reported (not used: its series start again).
    fn restore_where(
        &self,
        wanted: impl Fn(PartitionId) -> bool,
        everything: bool,
    ) -> Result<RestoredState, StoreError> {
        let mut vehicles: HashMap<String, VehicleState> = HashMap::new();
        for item in self.partition_entries(CF_VEHICLES, &wanted) {
            let (key, value) = item?;
            let (partition, id, _) =
                keys::split_vehicle(&key).ok_or_else(|| corrupt(CF_VEHICLES, &key))?;
            let meta = decode::<Vehicles>(&value).ok_or_else(|| corrupt(CF_VEHICLES, &key))?;
            let vehicle = vehicles.entry(id).or_default();
            vehicle.partition = partition;
            vehicle.meta = meta;
        }
        for item in self.partition_entries(CF_BINS, &wanted) {
            let (key, value) = item?;
            let (partition, id, bin) =
                keys::split_bin(&key).ok_or_else(|| corrupt(CF_BINS, &key))?;
            let stats = decode::<Bins>(&value).ok_or_else(|| corrupt(CF_BINS, &key))?;
            let vehicle = vehicles.entry(id).or_default();
            vehicle.partition = partition;
            if bin == RETIRED_BIN {
                vehicle.retired = stats;
            } else {
                vehicle.bins.insert(bin, stats);
            }
        }
        let mut fleet_sums = HashMap::new();
        for item in self.partition_entries(CF_FLEET, &wanted) {
            let (key, value) = item?;
            let partition = keys::partition_of(&key).ok_or_else(|| corrupt(CF_FLEET, &key))?;
            let sums = decode::<Fleet>(&value).ok_or_else(|| corrupt(CF_FLEET, &key))?;
            fleet_sums.insert(partition, sums);
        }
        let mut partitions: HashMap<PartitionId, PartitionState> = HashMap::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_POSITIONS), IteratorMode::Start)
        {
            let (key, value) = item?;
            let partition = match keys::stored_partition_of(&key) {
                Some(StoredPartition::Partition(p)) if wanted(p) => p,
                Some(_) => continue,
                None => return Err(corrupt(CF_POSITIONS, &key)),
            };
            let stored = decode::<Positions>(&value).ok_or_else(|| corrupt(CF_POSITIONS, &key))?;
            let state = partitions.entry(partition).or_default();
            state.next_offset = stored.next_offset;
            state.watermark_ms = stored.watermark_ms;
            state.seen_cutoff_ms = stored.seen_cutoff_ms;
            state.closed_through_ms = stored.closed_through_ms;
            state.sampling_scale = stored.sampling_scale;
        }
        for item in self.partition_entries(CF_FACT_BINS, &wanted) {
            let (key, value) = item?;
            let (partition, bin) =
                keys::split_fact_bin(&key).ok_or_else(|| corrupt(CF_FACT_BINS, &key))?;
            let offset = decode::<FactBins>(&value).ok_or_else(|| corrupt(CF_FACT_BINS, &key))?;
            partitions
                .entry(partition)
                .or_default()
                .fact_bins
                .insert(bin, offset);
        }
        let mut series = Vec::new();
        let mut legacy_cohorts = 0;
        for item in self.db.iterator_cf(self.cf(CF_SERIES), IteratorMode::Start) {
            let (key, value) = item?;
            match keys::stored_partition_of(&key) {
                Some(StoredPartition::Partition(p)) if wanted(p) => {}
                Some(StoredPartition::LegacyCohorts) => {
                    legacy_cohorts += usize::from(everything);
                    continue;
                }
                Some(_) => continue,
                None => return Err(corrupt(CF_SERIES, &key)),
            }
            let (partition, id, rest) =
                keys::split_vehicle(&key).ok_or_else(|| corrupt(CF_SERIES, &key))?;
            if !rest.is_empty() {
                return Err(corrupt(CF_SERIES, &key));
            }
            let bytes = decode::<Series>(&value).ok_or_else(|| corrupt(CF_SERIES, &key))?;
            series.push((partition, id, bytes));
        }
        if legacy_cohorts > 0 {
            tracing::warn!(
                cohorts = legacy_cohorts,
                "cohort state from an older safetel is not used: the cohorts' series start again"
            );
        }
        for item in self.partition_entries(CF_SEEN, &wanted) {
            let (key, value) = item?;
            let partition = keys::partition_of(&key).ok_or_else(|| corrupt(CF_SEEN, &key))?;
            let entries = decode::<Seen>(&value).ok_or_else(|| corrupt(CF_SEEN, &key))?;
            let state = partitions.entry(partition).or_default();
            for (time, hash) in entries {
                if time >= state.seen_cutoff_ms {
                    // An id accepted again once its first time no longer counted: the later.
                    let latest = state.seen.entry(hash).or_insert(time);
                    *latest = (*latest).max(time);
                }
            }
        }
        let mut aggregators = Vec::new();
        for item in self.partition_entries(CF_COHORTS, &wanted) {
            let (key, value) = item?;
            let aggregator = keys::partition_of(&key)
                .and_then(PartitionId::cohort)
                .ok_or_else(|| corrupt(CF_COHORTS, &key))?;
            let progress = decode::<Cohorts>(&value).ok_or_else(|| corrupt(CF_COHORTS, &key))?;
            aggregators.push((aggregator, progress));
        }
        let mut priors = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PRIORS), IteratorMode::Start) {
            let (key, value) = item?;
            let (_, id, _) = keys::split_vehicle(&key).ok_or_else(|| corrupt(CF_PRIORS, &key))?;
            let prior = decode::<Priors>(&value).ok_or_else(|| corrupt(CF_PRIORS, &key))?;
            priors.push((id, prior));
        }
        Ok(RestoredState {
            vehicles: vehicles.into_iter().collect(),
            partitions,
            series,
            aggregators,
            priors,
            fleet_sums,
        })
    }

    /// Every fact kept (an accepted record's original bytes) with its partition and vehicle:
    /// those from before retention, then by partition, bin and vehicle, each vehicle's in the
    /// order accepted within a bin.
    pub fn for_each_fact(
        &self,
        mut f: impl FnMut(PartitionId, &str, &[u8]),
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        for item in self.db.iterator_cf(self.cf(CF_FACTS), IteratorMode::Start) {
            let (key, value) = item?;
            let (partition, vehicle, _) =
                keys::split_vehicle(&key).ok_or_else(|| corrupt(CF_FACTS, &key))?;
            let segment = decode::<Facts>(&value).ok_or_else(|| corrupt(CF_FACTS, &key))?;
            for record in fact_records(&segment) {
                f(
                    partition,
                    &vehicle,
                    record.ok_or_else(|| corrupt(CF_FACTS, &key))?,
                );
                count += 1;
            }
        }
        self.for_each_segment_record::<FactsByBin>(|partition, _, vehicle, record| {
            f(partition, vehicle, record);
            count += 1;
            Ok(())
        })?;
        Ok(count)
    }

    /// Every item of the refit's timelines kept, with its partition and vehicle (any order).
    pub fn for_each_timeline_item(
        &self,
        mut f: impl FnMut(PartitionId, &str, TimelineItem),
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        self.for_each_segment_record::<Timeline>(|partition, bin, vehicle, encoded| {
            for item in TimelineItem::decode_all(encoded, bin) {
                f(partition, vehicle, item.ok_or(())?);
                count += 1;
            }
            Ok(())
        })?;
        Ok(count)
    }

    /// Each record of the segments of `cf` (keyed partition | bin | vehicle | offset), with its
    /// partition, bin and vehicle; `f` failing, or a damaged segment, is a corrupt entry.
    fn for_each_segment_record<F: Family<Value = Vec<u8>>>(
        &self,
        mut f: impl FnMut(PartitionId, i64, &str, &[u8]) -> Result<(), ()>,
    ) -> Result<(), StoreError> {
        let cf = F::CF;
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            let (key, value) = item?;
            let (partition, bin, vehicle) =
                keys::split_fact_by_bin(&key).ok_or_else(|| corrupt(cf, &key))?;
            let segment = decode::<F>(&value).ok_or_else(|| corrupt(cf, &key))?;
            for record in fact_records(&segment) {
                let record = record.ok_or_else(|| corrupt(cf, &key))?;
                f(partition, bin, &vehicle, record).map_err(|()| corrupt(cf, &key))?;
            }
        }
        Ok(())
    }

    /// The rejected input offsets of a partition from `from` on (the ledger a rebuild of its
    /// facts skips).
    pub fn rejected_offsets(
        &self,
        partition: PartitionId,
        from: i64,
    ) -> Result<std::collections::BTreeSet<i64>, StoreError> {
        let mut offsets = std::collections::BTreeSet::new();
        let start = keys::fact_bin_prefix(partition, from);
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(keys::partition_end(partition).to_vec());
        let entries = self.db.iterator_cf_opt(
            self.cf(CF_REJECTED),
            options,
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for item in entries {
            let (key, value) = item?;
            let rejected = decode::<Rejected>(&value).ok_or_else(|| corrupt(CF_REJECTED, &key))?;
            offsets.extend(rejected.into_iter().filter(|offset| *offset >= from));
        }
        Ok(offsets)
    }

    /// Writes fact and seen-id segments rebuilt from the input (local: no changelog carries
    /// them).
    pub fn put_facts(
        &self,
        segments: &[FactSegment],
        seen: &[SeenSegment],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for op in seen
            .iter()
            .map(|segment| Op::of::<Seen>(commit::seen_key(segment), &segment.entries))
            .chain(segments.iter().map(|segment| {
                Op::of::<FactsByBin>(commit::segment_key(segment), &segment.records)
            }))
        {
            let value = op.value.expect("puts");
            batch.put_cf(self.cf(op.cf), &op.key, value);
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Bytes (keys and values) of the state a partition's changelog carries, summed over the
    /// column families: what a restore of every partition reads.
    pub fn live_bytes(&self) -> Result<u64, StoreError> {
        let mut bytes = 0;
        for cf in PARTITIONED.iter().filter(|cf| !NOT_LOGGED.contains(cf)) {
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (key, value) = item?;
                bytes += (key.len() + value.len()) as u64;
            }
        }
        Ok(bytes)
    }

    /// Every column family's entries (key, value) in key order: equal only for the same
    /// commits of the same state, byte for byte.
    pub fn dump(&self) -> Result<BTreeMap<&'static str, Vec<Entry>>, StoreError> {
        let mut dump = BTreeMap::new();
        for cf in PARTITIONED.iter().chain(LOCAL.iter()) {
            let mut entries = Vec::new();
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (key, value) = item?;
                entries.push((key.to_vec(), value.to_vec()));
            }
            dump.insert(*cf, entries);
        }
        Ok(dump)
    }

    /// A canonical JSON picture of the whole store: equal state gives equal snapshots, however
    /// the records were split into commits (apart from `cohort_report_offsets`).
    pub fn snapshot(&self) -> Result<Value, StoreError> {
        let restored = self.restore()?;
        let series: BTreeMap<String, String> = restored
            .series
            .iter()
            .map(|(p, key, bytes)| {
                let at = p.stored();
                // Digested in one form, whichever stored them (equal state, equal snapshot).
                let fixed = crate::engine::detection::fixed_series_form(bytes);
                let digested = fixed.as_deref().unwrap_or(bytes);
                (
                    format!("{at}/{key}"),
                    format!("{:016x}", id_hash(&[digested])),
                )
            })
            .collect();
        let vehicles: BTreeMap<String, Value> = restored
            .vehicles
            .into_iter()
            .map(|(id, v)| {
                let bins: BTreeMap<String, &BinStats> = v.bins.iter().map(|(b, s)| (b.to_string(), s)).collect();
                (id, json!({"partition": v.partition, "meta": v.meta, "bins": bins, "totals": v.totals()}))
            })
            .collect();
        // Where each cohort aggregator has read the repartition topic to: transport, not state
        // (how many records that takes depends on how commits fell, and on aborted ones).
        let cohort_report_offsets: BTreeMap<String, i64> = restored
            .partitions
            .iter()
            .filter_map(|(p, s)| Some((p.cohort()?.to_string(), s.next_offset)))
            .collect();
        let partitions: BTreeMap<String, Value> = restored
            .partitions
            .into_iter()
            .filter(|(p, _)| p.is_source())
            .map(|(p, s)| {
                let mut seen: Vec<(i64, u64)> = s.seen.into_iter().map(|(h, t)| (t, h)).collect();
                seen.sort_unstable();
                let bytes: Vec<u8> = seen
                    .iter()
                    .flat_map(|(t, h)| [t.to_le_bytes(), h.to_le_bytes()])
                    .flatten()
                    .collect();
                let value = json!({"next_offset": s.next_offset, "watermark_ms": s.watermark_ms,
                    "seen_cutoff_ms": s.seen_cutoff_ms, "closed_through_ms": s.closed_through_ms,
                    "seen": seen.len(),
                    "seen_digest": format!("{:016x}", id_hash(&[&bytes]))});
                (p.to_string(), value)
            })
            .collect();
        let aggregators: BTreeMap<String, Value> = restored
            .aggregators
            .iter()
            .map(|(q, progress)| {
                let at = PartitionId::Cohort(*q).stored();
                (at.to_string(), json!(progress))
            })
            .collect();
        // A sum of the records' hashes: the same facts give the same digest in any order (fact
        // segments are keyed by bin, so how commits split them orders them).
        let mut digest = 0u64;
        let count = self.for_each_fact(|partition, vehicle, record| {
            digest = digest.wrapping_add(id_hash(&[
                &partition.stored().to_le_bytes(),
                vehicle.as_bytes(),
                record,
            ]));
        })?;
        Ok(json!({"vehicles": vehicles, "partitions": partitions,
            "facts": {"count": count, "digest": format!("{digest:016x}")},
            "series": series, "cohort_aggregators": aggregators,
            "cohort_report_offsets": cohort_report_offsets,
            "priors": restored.priors.len(), "alerts": self.alerts()?.len()}))
    }
}

/// Where a migration of `cf` records how far it got.
fn migration_key(cf: &str) -> Vec<u8> {
    [b"migrated-through/", cf.as_bytes()].concat()
}

fn corrupt(cf: &'static str, key: &[u8]) -> StoreError {
    StoreError::Corrupt {
        cf,
        detail: format!("unreadable entry at key {key:02x?}"),
    }
}

impl Store {
    /// One vehicle's committed state under `partition`: meta, bins (and retired sum) and its
    /// encoded series; `None` if the store has no meta for it.
    pub fn load_vehicle(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
    ) -> Result<Option<StoredVehicle>, StoreError> {
        let key = Vehicles::key((partition, vehicle_id));
        let Some(meta) = self.db.get_cf(self.cf(CF_VEHICLES), &key)? else {
            return Ok(None);
        };
        let mut vehicle = VehicleState {
            partition,
            meta: decode::<Vehicles>(&meta).ok_or_else(|| corrupt(CF_VEHICLES, &key))?,
            ..VehicleState::default()
        };
        self.for_each_stored_bin(partition, vehicle_id, |bin, stats| {
            if bin == RETIRED_BIN {
                vehicle.retired = stats;
            } else {
                vehicle.bins.insert(bin, stats);
            }
        })?;
        let series = match self.db.get_cf(self.cf(CF_SERIES), &key)? {
            Some(stored) => {
                Some(decode::<Series>(&stored).ok_or_else(|| corrupt(CF_SERIES, &key))?)
            }
            None => None,
        };
        Ok(Some((vehicle, series)))
    }
}

impl Store {
    /// A vehicle's committed state under whichever source partition holds it.
    pub fn find_vehicle(&self, vehicle_id: &str) -> Result<Option<StoredVehicle>, StoreError> {
        for item in self
            .db
            .iterator_cf(self.cf(CF_POSITIONS), IteratorMode::Start)
        {
            let (key, _) = item?;
            let Some(partition) = keys::partition_of(&key).filter(|p| p.is_source()) else {
                continue;
            };
            if let Some(found) = self.load_vehicle(partition, vehicle_id)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

impl Store {
    /// Each fact kept for `vehicle_id` of `partition` under bin `bin_ms`, in the order
    /// accepted: the segments under partition | bin | vehicle.
    pub fn for_each_vehicle_fact_in_bin(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
        bin_ms: i64,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        let prefix = keys::vehicle_bin_facts_prefix(partition, bin_ms, vehicle_id);
        let segments = self
            .db
            .prefix_iterator_cf(self.cf(CF_FACTS_BY_BIN), &prefix);
        for item in segments {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let segment =
                decode::<FactsByBin>(&value).ok_or_else(|| corrupt(CF_FACTS_BY_BIN, &key))?;
            for record in fact_records(&segment) {
                f(record.ok_or_else(|| corrupt(CF_FACTS_BY_BIN, &key))?);
            }
        }
        Ok(())
    }
}

/// A vehicle page's latest records come from the facts (a store it cannot read lists none,
/// and says so in the log).
impl crate::dashboard::recent::VehicleHistory for Store {
    fn records_in_bin(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
        bin_ms: i64,
        f: &mut dyn FnMut(&[u8]),
    ) {
        if let Err(error) = self.for_each_vehicle_fact_in_bin(partition, vehicle_id, bin_ms, f) {
            tracing::warn!(%error, vehicle_id, bin_ms, "a vehicle's facts could not be read for its page");
        }
    }

    fn stored_bins(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
    ) -> Option<std::sync::Arc<crate::engine::BinMap>> {
        self.history
            .get_or_load(partition, vehicle_id, || {
                self.vehicle_bins(partition, vehicle_id)
            })
            .map_err(|error| tracing::warn!(%error, vehicle_id, "a vehicle's stored bins could not be read for its page"))
            .ok()
    }
}

/// Vehicles that left the engine's memory come back from here.
impl crate::engine::VehicleArchive for Store {
    fn load(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
    ) -> Result<Option<StoredVehicle>, String> {
        self.load_vehicle(partition, vehicle_id)
            .map_err(|e| e.to_string())
    }

    fn stored_bins(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
    ) -> Result<crate::engine::BinMap, String> {
        self.vehicle_bins(partition, vehicle_id)
            .map_err(|e| e.to_string())
    }
}

impl From<StoreError> for CommitError {
    fn from(error: StoreError) -> Self {
        CommitError::Store(Box::new(error))
    }
}

impl CommitTarget for Store {
    fn commit(&mut self, delta: StateDelta) -> Result<(), CommitError> {
        Ok(self.write(delta)?)
    }
}

/// Shared with the nightly refit, which reads facts and writes priors on its own thread.
impl CommitTarget for std::sync::Arc<Store> {
    fn commit(&mut self, delta: StateDelta) -> Result<(), CommitError> {
        Ok(self.write(delta)?)
    }
}

#[cfg(test)]
mod tests;
