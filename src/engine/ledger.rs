//! The facts' ledger: what lets a process that was given a partition rebuild its facts and its
//! seen record ids from the input topic, since the changelog carries state, not input.
//!
//! Facts (the accepted records' bytes, the warehouse's input) and seen ids (a hash and a time per
//! accepted record, for the duplicate check) stay in the store that accepted them. Each
//! partition's state holds, and its changelog carries, the offset of the first record kept under
//! each bin of record time ([`super::PartitionState::fact_bins`]) and the offsets of the records
//! rejected. From the input topic read again from the first offset of the bins wanted,
//! [`FactsRebuild`] keeps every record not rejected under the bin of its record time, and the ids
//! of those whose time still counts, as the engine did. Pure: the Kafka edge reads the records
//! (`kafka::facts_rebuild`).

use std::collections::{BTreeSet, HashMap};

use super::admission::TimeRules;
use super::state::{FactSegment, MAX_SEGMENT_BYTES, PartitionState, PendingFacts, SeenSegment};
use crate::model::Payload;

/// What a rebuild of one partition wants from its input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wanted {
    /// Facts of the records from this offset on.
    pub facts_from: i64,
    /// Ids of the records from this offset on whose record time is at least `seen_cutoff_ms`.
    pub seen_from: i64,
    pub seen_cutoff_ms: i64,
    /// The partition's committed offset: the engine reads on from there.
    pub end: i64,
}

impl Wanted {
    /// For a partition as restored: facts of its bins from `facts_bin` on, and the ids that
    /// still count (their bins start at the one holding the cutoff). `None`: nothing to read.
    pub fn of(state: &PartitionState, facts_bin: i64, bin_width_ms: i64) -> Option<Wanted> {
        let end = state.next_offset;
        let cutoff_bin = if state.seen_cutoff_ms == i64::MIN {
            i64::MIN
        } else {
            state.seen_cutoff_ms.div_euclid(bin_width_ms) * bin_width_ms
        };
        let wanted = Wanted {
            facts_from: state.facts_from(facts_bin).unwrap_or(end),
            seen_from: state.facts_from(cutoff_bin).unwrap_or(end),
            seen_cutoff_ms: state.seen_cutoff_ms,
            end,
        };
        (wanted.from() < end).then_some(wanted)
    }

    /// Where reading starts.
    pub fn from(&self) -> i64 {
        self.facts_from.min(self.seen_from)
    }
}

/// The facts and seen ids of one partition, rebuilt from its input records offered in offset
/// order.
pub struct FactsRebuild {
    partition: crate::partition_id::PartitionId,
    bin_width_ms: i64,
    wanted: Wanted,
    rejected: BTreeSet<i64>,
    buffers: HashMap<String, PendingFacts>,
    buffered_bytes: usize,
    seen: Vec<(i64, u64)>,
    seen_first_offset: Option<i64>,
    /// Facts kept, ids kept, and records offered that did not decode although they were
    /// accepted.
    pub kept: u64,
    pub ids_kept: u64,
    pub unreadable: u64,
}

impl FactsRebuild {
    /// A rebuild of what `wanted` asks for among the records not in `rejected`.
    pub fn new(
        partition: crate::partition_id::PartitionId,
        bin_width_ms: i64,
        wanted: Wanted,
        rejected: BTreeSet<i64>,
    ) -> FactsRebuild {
        FactsRebuild {
            partition,
            bin_width_ms,
            wanted,
            rejected,
            buffers: HashMap::new(),
            buffered_bytes: 0,
            seen: Vec::new(),
            seen_first_offset: None,
            kept: 0,
            ids_kept: 0,
            unreadable: 0,
        }
    }

    /// Takes the input record at `offset`; returns whether it became a fact.
    pub fn offer(&mut self, offset: i64, payload: &[u8]) -> bool {
        let w = self.wanted;
        if offset < w.from() || offset >= w.end || self.rejected.contains(&offset) {
            return false;
        }
        // Accepted once, so it decodes; should it not, it is counted, never guessed at.
        let Ok(event) = crate::codec::decode(payload) else {
            self.unreadable += 1;
            return false;
        };
        let time = TimeRules::record_time(&event);
        // The duplicate check sees every record but a review service's answer.
        if offset >= w.seen_from
            && time >= w.seen_cutoff_ms
            && !matches!(event.payload, Payload::Review(_))
        {
            let hash =
                super::admission::record_hash(event.kind(), &event.vehicle_id, event.record_id());
            self.seen.push((time, hash));
            self.seen_first_offset.get_or_insert(offset);
            self.ids_kept += 1;
        }
        if offset < w.facts_from {
            return false;
        }
        let width = self.bin_width_ms;
        let bin = time.div_euclid(width) * width;
        self.buffers
            .entry(event.vehicle_id.to_string())
            .or_default()
            .push(bin, offset, payload);
        self.buffered_bytes += payload.len();
        self.kept += 1;
        true
    }

    /// The ids taken since the last call, as segments for the store.
    pub fn take_seen(&mut self) -> Vec<SeenSegment> {
        let entries = std::mem::take(&mut self.seen);
        let Some(first_offset) = self.seen_first_offset.take() else {
            return Vec::new();
        };
        let Some(max_time_ms) = entries.iter().map(|(t, _)| *t).max() else {
            return Vec::new();
        };
        SeenSegment {
            partition: self.partition,
            first_offset,
            max_time_ms,
            entries,
        }
        .split(MAX_SEGMENT_BYTES)
    }

    /// Bytes of facts and ids taken since they were last taken.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes + self.seen.len() * 16
    }

    /// The facts taken since the last call, as segments for the store.
    pub fn take_segments(&mut self) -> Vec<FactSegment> {
        self.buffered_bytes = 0;
        let partition = self.partition;
        self.buffers
            .drain()
            .flat_map(|(vehicle_id, pending)| pending.into_segments(partition, &vehicle_id))
            .collect()
    }
}
