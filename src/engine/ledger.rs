//! The facts' ledger: what lets a process that was given a partition rebuild its facts from the
//! input topic, since the changelog carries state, not input.
//!
//! Facts (the accepted records' bytes, the warehouse's input) stay in the store that accepted
//! them. Each partition's state holds, and its changelog carries, the offset of the first record
//! kept under each bin of record time ([`super::PartitionState::fact_bins`]) and the offsets of
//! the records rejected. From the input topic read again from the first offset of the bins
//! wanted, [`FactsRebuild`] keeps every record not rejected under the bin of its record time, as
//! the engine did. Pure: the Kafka edge reads the records (`kafka::facts_rebuild`).

use std::collections::{BTreeSet, HashMap};

use super::admission::TimeRules;
use super::state::{FactSegment, MAX_SEGMENT_BYTES, PendingFacts};

/// The facts of one partition, rebuilt from its input records offered in offset order.
pub struct FactsRebuild {
    partition: i32,
    bin_width_ms: i64,
    /// Records before this are not wanted; from `end` on, the engine has not read them yet.
    from: i64,
    end: i64,
    rejected: BTreeSet<i64>,
    buffers: HashMap<String, PendingFacts>,
    buffered_bytes: usize,
    /// Records kept, and records offered that did not decode although they were accepted.
    pub kept: u64,
    pub unreadable: u64,
}

impl FactsRebuild {
    /// A rebuild of the records in `from..end` not among `rejected`.
    pub fn new(
        partition: i32,
        bin_width_ms: i64,
        (from, end): (i64, i64),
        rejected: BTreeSet<i64>,
    ) -> FactsRebuild {
        FactsRebuild {
            partition,
            bin_width_ms,
            from,
            end,
            rejected,
            buffers: HashMap::new(),
            buffered_bytes: 0,
            kept: 0,
            unreadable: 0,
        }
    }

    /// Takes the input record at `offset`; returns whether it became a fact.
    pub fn offer(&mut self, offset: i64, payload: &[u8]) -> bool {
        if offset < self.from || offset >= self.end || self.rejected.contains(&offset) {
            return false;
        }
        // Accepted once, so it decodes; should it not, it is counted, never guessed at.
        let Ok(event) = crate::codec::decode(payload) else {
            self.unreadable += 1;
            return false;
        };
        let width = self.bin_width_ms;
        let bin = TimeRules::record_time(&event).div_euclid(width) * width;
        self.buffers
            .entry(event.vehicle_id.to_string())
            .or_default()
            .push(bin, offset, payload);
        self.buffered_bytes += payload.len();
        self.kept += 1;
        true
    }

    /// Bytes of facts taken since the last [`FactsRebuild::take_segments`].
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// The facts taken since the last call, as segments for the store.
    pub fn take_segments(&mut self) -> Vec<FactSegment> {
        self.buffered_bytes = 0;
        let mut segments = Vec::new();
        for (vehicle_id, pending) in self.buffers.drain() {
            for (bin_ms, facts) in pending.0 {
                let segment = FactSegment {
                    partition: self.partition,
                    bin_ms,
                    vehicle_id: vehicle_id.clone(),
                    first_offset: facts.first_offset,
                    records: facts.bytes,
                };
                segments.extend(segment.split(MAX_SEGMENT_BYTES));
            }
        }
        segments
    }
}
