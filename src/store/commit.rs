//! How one commit's [`StateDelta`] becomes changes to the store: puts and deletes, in order, into
//! a [`Changes`] sink. With a changelog the sink is a list of [`Op`]s (each is also a changelog
//! record); without one the changes go straight into RocksDB's write batch, each value encoded
//! in one reused buffer, with no list in between (a commit's changes are then held once, in
//! the batch).

use rocksdb::{IteratorMode, WriteBatch};

use super::codec::{
    self, Bins, Cohorts, FactsByBin, Family, Fleet, Positions, Rejected, Seen, Series,
    StoredPosition, Timeline, Vehicles, decode,
};
use super::{
    CF_BINS, CF_FACT_BINS, CF_FACTS_BY_BIN, CF_REJECTED, CF_SEEN, CF_TIMELINE, Op, Store,
    StoreError, corrupt, keys,
};
use crate::engine::state::{FactSegment, SeenSegment};
use crate::engine::{BinStats, PartitionId, RETIRED_BIN, StateDelta};

/// Where a commit's changes go, in order.
pub trait Changes {
    /// Puts `value` (stored bytes, version byte first) under `key` in `cf`.
    fn put(&mut self, cf: &'static str, key: Vec<u8>, value: &[u8]);
    /// Deletes `key` from `cf`.
    fn delete(&mut self, cf: &'static str, key: Vec<u8>);
    /// Undoes this commit's puts to `cf` in `[from, to)`: retention deletes that range in the
    /// same commit.
    fn forget_puts(&mut self, cf: &'static str, from: &[u8], to: &[u8]);
}

/// The changes as a list (what a changelog carries, then the store applies).
impl Changes for Vec<Op> {
    fn put(&mut self, cf: &'static str, key: Vec<u8>, value: &[u8]) {
        self.push(Op::put(cf, key, value.to_vec()));
    }

    fn delete(&mut self, cf: &'static str, key: Vec<u8>) {
        self.push(Op::delete(cf, key));
    }

    fn forget_puts(&mut self, cf: &'static str, from: &[u8], to: &[u8]) {
        self.retain(|op| {
            !(op.cf == cf && op.value.is_some() && op.key[..] >= *from && op.key[..] < *to)
        });
    }
}

/// The changes straight into a write batch of `store`.
pub struct BatchChanges<'a> {
    store: &'a Store,
    pub batch: WriteBatch,
    /// Per column family and partition (a key's first four bytes), the smallest key put so
    /// far: whether a range of the partition may hold a put.
    smallest_put: Vec<(&'static str, Vec<u8>)>,
}

impl<'a> BatchChanges<'a> {
    /// A batch of `store` with room for about `bytes` of changes.
    pub fn with_capacity(store: &'a Store, bytes: usize) -> BatchChanges<'a> {
        BatchChanges {
            store,
            batch: WriteBatch::with_capacity_bytes(bytes),
            smallest_put: Vec::new(),
        }
    }
}

impl Changes for BatchChanges<'_> {
    fn put(&mut self, cf: &'static str, key: Vec<u8>, value: &[u8]) {
        self.batch.put_cf(self.store.cf(cf), &key, value);
        let same =
            |c: &str, smallest: &[u8]| c == cf && partition_of(smallest) == partition_of(&key);
        match self.smallest_put.iter_mut().find(|(c, k)| same(c, k)) {
            Some((_, smallest)) if key < *smallest => *smallest = key,
            Some(_) => {}
            None => self.smallest_put.push((cf, key)),
        }
    }

    fn delete(&mut self, cf: &'static str, key: Vec<u8>) {
        self.batch.delete_cf(self.store.cf(cf), &key);
    }

    fn forget_puts(&mut self, cf: &'static str, from: &[u8], to: &[u8]) {
        // A range deletion after the puts covers them; only where one may lie in the range
        // (ranges are within one partition).
        let may_hold_a_put = self.smallest_put.iter().any(|(c, smallest)| {
            *c == cf && partition_of(smallest) == partition_of(from) && smallest.as_slice() < to
        });
        if may_hold_a_put {
            self.batch.delete_range_cf(self.store.cf(cf), from, to);
        }
    }
}

/// The partition a key is of: its first four bytes.
fn partition_of(key: &[u8]) -> Option<&[u8]> {
    key.get(..4)
}

/// Encodes values in one reused buffer.
struct Encoder<'c> {
    changes: &'c mut dyn Changes,
    value: Vec<u8>,
}

impl Encoder<'_> {
    fn put<F: Family>(&mut self, key: F::Key<'_>, value: &F::Value) {
        self.value.clear();
        self.value.push(F::VERSION);
        F::encode_body(value, &mut self.value);
        self.changes.put(F::CF, F::key(key), &self.value);
    }

    fn delete(&mut self, cf: &'static str, key: Vec<u8>) {
        self.changes.delete(cf, key);
    }
}

impl Store {
    /// The changes one commit makes, in order, as a list. Seen-id segments that fall below a
    /// partition's cutoff are deleted key by key (so that a changelog can carry the deletes).
    /// The delta's per-vehicle lists (attributes, bins, segments, series) are taken: each
    /// is let go as soon as it is encoded.
    pub fn ops(&self, delta: &mut StateDelta) -> Result<Vec<Op>, StoreError> {
        let mut ops = Vec::new();
        self.changes(delta, &mut ops)?;
        Ok(ops)
    }

    /// The changes one commit makes, in order, into `changes`.
    pub fn changes(
        &self,
        delta: &mut StateDelta,
        changes: &mut dyn Changes,
    ) -> Result<(), StoreError> {
        let mut out = Encoder {
            changes,
            value: Vec::with_capacity(256),
        };
        for (partition, id, meta) in std::mem::take(&mut delta.vehicles) {
            out.put::<Vehicles>((partition, id.as_str()), &meta);
        }
        for (partition, id, bin, stats) in std::mem::take(&mut delta.bins) {
            out.put::<Bins>((partition, id.as_str(), bin), &stats);
        }
        for (partition, id, bin) in &delta.expired_bins {
            out.delete(CF_BINS, Bins::key((*partition, id.as_str(), *bin)));
        }
        for (partition, id, horizon) in &delta.retire_stored {
            self.retire_stored(*partition, id, *horizon, &mut out)?;
        }
        for segment in std::mem::take(&mut delta.facts) {
            out.put::<FactsByBin>(segment_key(&segment), &segment.records);
        }
        for segment in std::mem::take(&mut delta.timeline) {
            out.put::<Timeline>(segment_key(&segment), &segment.records);
        }
        for (partition, bin, offset) in &delta.fact_bins {
            out.put::<codec::FactBins>((*partition, *bin), offset);
        }
        for (partition, offsets) in &delta.rejected {
            let Some(last) = offsets.last() else {
                continue;
            };
            out.put::<Rejected>((*partition, *last), offsets);
        }
        for (partition, sums) in &delta.fleet_sums {
            out.put::<Fleet>(*partition, sums);
        }
        for segment in &delta.seen {
            out.put::<Seen>(seen_key(segment), &segment.entries);
        }
        for position in &delta.positions {
            // Segments whose every id is below the cutoff are dropped; restore filters the rest.
            let from = keys::seen_segment(position.partition, i64::MIN, i64::MIN);
            let to = keys::seen_segment(position.partition, position.seen_cutoff_ms, i64::MIN);
            self.delete_range(CF_SEEN, &from, &to, &mut out)?;
            if position.facts_horizon_ms != i64::MIN {
                // Fact segments of the bins retention let go.
                let from = keys::partition_prefix(position.partition).to_vec();
                let to = keys::fact_bin_prefix(position.partition, position.facts_horizon_ms);
                self.delete_range(CF_FACTS_BY_BIN, &from, &to, &mut out)?;
                self.delete_range(CF_TIMELINE, &from, &to, &mut out)?;
                self.delete_range(CF_FACT_BINS, &from, &to, &mut out)?;
                // Rejections no rebuild reads: those before the first offset of the bins kept.
                let to = keys::fact_bin_prefix(position.partition, position.rejected_floor);
                self.delete_range(CF_REJECTED, &from, &to, &mut out)?;
            }
            let stored = StoredPosition {
                next_offset: position.next_offset,
                watermark_ms: position.watermark_ms,
                seen_cutoff_ms: position.seen_cutoff_ms,
                closed_through_ms: position.closed_through_ms,
                sampling_scale: position.sampling_scale,
            };
            out.put::<Positions>(position.partition, &stored);
        }
        for (partition, key, bytes) in std::mem::take(&mut delta.series) {
            out.put::<Series>((partition, key.as_str()), &bytes);
        }
        for (aggregator, progress) in &delta.aggregators {
            out.put::<Cohorts>(*aggregator, progress);
        }
        for alert in &delta.alerts {
            out.put::<codec::Alerts>(alert.alert_id.as_str(), alert);
        }
        Ok(())
    }

    /// Retires a vehicle's stored bins before `horizon` (it is out of the engine's memory): adds
    /// them to its [`RETIRED_BIN`] sum and deletes them, as the engine does for those it holds.
    fn retire_stored(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
        horizon: i64,
        out: &mut Encoder<'_>,
    ) -> Result<(), StoreError> {
        let from = Bins::key((partition, vehicle_id, RETIRED_BIN));
        let to = Bins::key((partition, vehicle_id, horizon));
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(to);
        let mut retired = BinStats::default();
        let mut any = false;
        for item in self.db.iterator_cf_opt(
            self.cf(CF_BINS),
            options,
            IteratorMode::From(&from, rocksdb::Direction::Forward),
        ) {
            let (key, value) = item?;
            let stats = decode::<Bins>(&value).ok_or_else(|| corrupt(CF_BINS, &key))?;
            retired.add(&stats);
            if key[..] != from[..] {
                out.delete(CF_BINS, key.to_vec());
                any = true;
            }
        }
        if any {
            out.put::<Bins>((partition, vehicle_id, RETIRED_BIN), &retired);
        }
        Ok(())
    }

    /// Deletes every key of `cf` in `[from, to)` key by key (so that a changelog can carry the
    /// deletes), including puts of this very commit, which then never reach the store.
    fn delete_range(
        &self,
        cf: &'static str,
        from: &[u8],
        to: &[u8],
        out: &mut Encoder<'_>,
    ) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        out.changes.forget_puts(cf, from, to);
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(to.to_vec());
        let below = self.db.iterator_cf_opt(
            self.cf(cf),
            options,
            IteratorMode::From(from, rocksdb::Direction::Forward),
        );
        for item in below {
            let (key, _) = item?;
            out.delete(cf, key.to_vec());
        }
        Ok(())
    }
}

/// Puts `delta`'s largest lists in the order of their keys: RocksDB inserts a batch's keys into
/// its memtable one by one, and keys in order find their place from the one before instead of
/// from the top. (Within a list a key appears once, or with the same value.)
pub(super) fn sort_by_key(delta: &mut StateDelta) {
    delta
        .vehicles
        .sort_by(|a, b| by_vehicle(a.0, &a.1).cmp(&by_vehicle(b.0, &b.1)));
    delta
        .bins
        .sort_by(|a, b| (by_vehicle(a.0, &a.1), a.2).cmp(&(by_vehicle(b.0, &b.1), b.2)));
    for segments in [&mut delta.facts, &mut delta.timeline] {
        segments.sort_by(|a, b| by_segment(a).cmp(&by_segment(b)));
    }
    delta
        .series
        .sort_by(|a, b| by_vehicle(a.0, &a.1).cmp(&by_vehicle(b.0, &b.1)));
}

/// What orders keys of partition | vehicle (a vehicle's id after its length).
fn by_vehicle(partition: PartitionId, id: &str) -> ([u8; 4], usize, &str) {
    (keys::partition_prefix(partition), id.len(), id)
}

/// What orders a segment's key: partition | bin | vehicle | first offset.
fn by_segment(s: &FactSegment) -> ([u8; 4], i64, usize, &str, i64) {
    (
        keys::partition_prefix(s.partition),
        s.bin_ms,
        s.vehicle_id.len(),
        &s.vehicle_id,
        s.first_offset,
    )
}

/// A seen-id segment's key.
pub(super) fn seen_key(segment: &SeenSegment) -> (PartitionId, i64, i64) {
    (segment.partition, segment.max_time_ms, segment.first_offset)
}

/// A fact (or timeline) segment's key.
pub(super) fn segment_key(segment: &FactSegment) -> codec::SegmentKey<'_> {
    (
        segment.partition,
        segment.bin_ms,
        segment.vehicle_id.as_str(),
        segment.first_offset,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::PartitionPosition;

    const DAY: i64 = 86_400_000;

    fn segment(partition: PartitionId, bin_ms: i64, vehicle: &str, offset: i64) -> FactSegment {
        FactSegment {
            partition,
            bin_ms,
            vehicle_id: vehicle.into(),
            first_offset: offset,
            records: vec![2, 7],
        }
    }

    /// Two commits of two partitions; the second's facts horizon expires the first's facts,
    /// and a fact of its own in an expired bin (which must not survive it).
    fn commits() -> Vec<StateDelta> {
        let (p0, p1) = (PartitionId::Source(0), PartitionId::Source(1));
        let position = |partition, facts_horizon_ms| PartitionPosition {
            partition,
            next_offset: 10,
            watermark_ms: 5 * DAY,
            seen_cutoff_ms: i64::MIN,
            closed_through_ms: i64::MIN,
            sampling_scale: 0.0,
            facts_horizon_ms,
            rejected_floor: 0,
        };
        let first = StateDelta {
            facts: vec![
                segment(p0, 0, "a", 1),
                segment(p0, DAY, "a", 2),
                segment(p1, 0, "b", 1),
            ],
            positions: vec![position(p0, i64::MIN), position(p1, i64::MIN)],
            ..StateDelta::default()
        };
        let second = StateDelta {
            facts: vec![segment(p0, 0, "c", 7), segment(p0, 3 * DAY, "a", 8)],
            bins: vec![(
                p1,
                "b".into(),
                DAY,
                BinStats {
                    trips: 2,
                    ..BinStats::default()
                },
            )],
            positions: vec![position(p0, 2 * DAY), position(p1, i64::MIN)],
            ..StateDelta::default()
        };
        vec![first, second]
    }

    fn facts(store: &Store) -> Vec<(PartitionId, String)> {
        let mut kept = Vec::new();
        store
            .for_each_fact(|p, vehicle, _| kept.push((p, vehicle.to_string())))
            .unwrap();
        kept
    }

    #[test]
    fn a_commit_written_straight_into_the_batch_leaves_what_its_changes_list_leaves() {
        let (listed, batched) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (listed, batched) = (
            Store::open(listed.path()).unwrap(),
            Store::open(batched.path()).unwrap(),
        );
        for (mut listed_delta, delta) in commits().into_iter().zip(commits()) {
            listed
                .apply(listed.ops(&mut listed_delta).unwrap(), &[])
                .unwrap();
            batched.write(delta).unwrap();
        }
        assert_eq!(batched.snapshot().unwrap(), listed.snapshot().unwrap());
        // Partition 0's facts before day 2 expired, the one put in the same commit too;
        // partition 1 kept its own.
        let p = PartitionId::Source;
        assert_eq!(
            facts(&batched),
            [(p(0), "a".to_string()), (p(1), "b".to_string())]
        );
        assert_eq!(facts(&listed), facts(&batched));
    }
}
