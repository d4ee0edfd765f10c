//! [`StateDelta`]: everything one commit writes, as the engine's outbox hands it over (see
//! [`super::outbox`]), the store encodes it and the changelog carries it, and what the group
//! view learns of it ([`StateDelta::view_items`]). Pure.

use super::cohorts::{AggregatorProgress, PartitionReport};
#[cfg(doc)]
use super::state::RETIRED_BIN;
use super::state::{BinStats, FactSegment, FleetSums, PartitionPosition, SeenSegment, VehicleMeta};
use super::view::{PartitionStamp, ViewItem};
use crate::partition_id::PartitionId;

/// Everything that changed since the last commit point, written by the store in one batch.
#[derive(Debug, Default)]
pub struct StateDelta {
    /// (partition, vehicle id, bin start, stats): new values of changed bins; at
    /// [`RETIRED_BIN`], the sum of the vehicle's retired bins.
    pub bins: Vec<(PartitionId, String, i64, BinStats)>,
    /// (partition, vehicle id, bin start) of bins that left the state with retention.
    pub expired_bins: Vec<(PartitionId, String, i64)>,
    /// (partition, vehicle id, horizon) of vehicles out of memory whose stored bins before the
    /// horizon the store retires into their [`RETIRED_BIN`] sum.
    pub retire_stored: Vec<(PartitionId, String, i64)>,
    /// (partition, fleet sums) of partitions that closed bins since the last commit.
    pub fleet_sums: Vec<(PartitionId, FleetSums)>,
    /// (partition, vehicle id, meta) of vehicles that changed.
    pub vehicles: Vec<(PartitionId, String, VehicleMeta)>,
    /// Fact segments: local to the store (the warehouse's input), never logged.
    pub facts: Vec<FactSegment>,
    /// The refit's timeline segments, by the facts' bins: logged.
    pub timeline: Vec<FactSegment>,
    /// (partition, bin, first offset) of bins given a first fact since the last commit.
    pub fact_bins: Vec<(PartitionId, i64, i64)>,
    /// (partition, offsets) of the records rejected since the last commit, in order.
    pub rejected: Vec<(PartitionId, Vec<i64>)>,
    pub seen: Vec<SeenSegment>,
    pub positions: Vec<PartitionPosition>,
    /// (partition, vehicle id or cohort key, encoded series) of series fed since the last
    /// commit; a cohort's under its aggregator's partition.
    pub series: Vec<(PartitionId, String, Vec<u8>)>,
    /// (aggregator, progress) of cohort aggregators that changed.
    pub aggregators: Vec<(i32, AggregatorProgress)>,
    /// (repartition-topic partition, report) to publish with this commit, when cohort reports
    /// go through the repartition topic.
    pub cohort_reports: Vec<(i32, PartitionReport)>,
    /// Alerts raised since the last commit (already published), for the record.
    pub alerts: Vec<crate::model::RegressionAlert>,
    /// What the group view learns of this commit (see the view module), where the engine
    /// publishes one (`Engine::with_group_view`).
    pub view: Vec<ViewItem>,
}

impl StateDelta {
    /// About how many bytes its changes take in a store's write batch (keys, values and
    /// framing; what the store reserves so that a large commit's batch is not grown, and
    /// copied, by doubling).
    pub fn approximate_batch_bytes(&self) -> usize {
        // Partition, separators, framing and the version byte; a vehicle id beside.
        const FRAMING: usize = 24;
        let keyed = |id: &str| FRAMING + id.len();
        let bins: usize = self
            .bins
            .iter()
            .map(|(_, id, _, _)| keyed(id) + 8 + BinStats::ENCODED_LEN)
            .sum();
        let vehicles: usize = self
            .vehicles
            .iter()
            .map(|(_, id, meta)| keyed(id) + 64 + meta.vehicle_model.len() * 2)
            .sum();
        let segments = |list: &[FactSegment]| -> usize {
            list.iter()
                .map(|s| keyed(&s.vehicle_id) + 16 + s.records.len())
                .sum()
        };
        let series: usize = self
            .series
            .iter()
            .map(|(_, key, bytes)| keyed(key) + bytes.len())
            .sum();
        let seen: usize = self
            .seen
            .iter()
            .map(|s| FRAMING + 16 + s.entries.len() * 16)
            .sum();
        bins + vehicles
            + segments(&self.facts)
            + segments(&self.timeline)
            + series
            + seen
            + (self.fact_bins.len() + self.positions.len() + self.expired_bins.len()) * 64
    }

    /// The vehicles whose bins these changes write or delete (each once, in no order).
    pub fn vehicles_with_bins(&self) -> Vec<(PartitionId, String)> {
        let mut changed: Vec<(PartitionId, String)> = self
            .bins
            .iter()
            .map(|(p, id, _, _)| (*p, id.clone()))
            .chain(self.expired_bins.iter().map(|(p, id, _)| (*p, id.clone())))
            .chain(self.retire_stored.iter().map(|(p, id, _)| (*p, id.clone())))
            .collect();
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// What the group view learns of these changes; `departed`: the vehicles that left memory
    /// at this commit, with their bins; `departed_count`: each partition's vehicles out of
    /// memory.
    pub fn view_items(
        &self,
        departed: &[(String, Vec<i64>)],
        departed_count: impl Fn(PartitionId) -> usize,
    ) -> Vec<ViewItem> {
        let mut items = Vec::new();
        for (partition, id, meta) in &self.vehicles {
            items.push(ViewItem::Vehicle {
                id: id.clone(),
                partition: *partition,
                meta: meta.clone(),
            });
        }
        for (_, id, start_ms, stats) in &self.bins {
            items.push(ViewItem::Bin {
                id: id.clone(),
                start_ms: *start_ms,
                stats: *stats,
            });
        }
        for (_, id, start_ms) in &self.expired_bins {
            items.push(ViewItem::BinGone {
                id: id.clone(),
                start_ms: *start_ms,
            });
        }
        for (partition, key, encoded) in &self.series {
            items.push(if let PartitionId::Cohort(aggregator) = *partition {
                ViewItem::Cohort {
                    key: key.clone(),
                    aggregator,
                    encoded: encoded.clone(),
                }
            } else {
                ViewItem::Series {
                    id: key.clone(),
                    encoded: encoded.clone(),
                }
            });
        }
        for (partition, sums) in &self.fleet_sums {
            items.push(ViewItem::Fleet {
                partition: *partition,
                sums: sums.clone(),
            });
        }
        for (id, bins) in departed {
            items.push(ViewItem::VehicleGone {
                id: id.clone(),
                bins: bins.clone(),
            });
        }
        items.extend(self.alerts.iter().cloned().map(ViewItem::Alert));
        for position in &self.positions {
            items.push(ViewItem::Partition(PartitionStamp {
                partition: position.partition,
                next_offset: position.next_offset,
                departed: departed_count(position.partition),
                ..Default::default()
            }));
        }
        items
    }
}
