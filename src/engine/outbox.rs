//! The commit outbox: what changed since the last commit point and is not visible in the state
//! maps themselves (which vehicles, partitions, series and aggregators to write, the cohort
//! reports and alerts to send), and how each kind of change is taken from the state into the
//! commit's [`StateDelta`] ([`take_vehicles`], [`take_partition`],
//! [`take_series`], [`take_cohorts`]; a task's and the engine's `take_delta` call them in
//! order). The HTTP API reads the fleet sums and cohort series as of the last commit
//! point from the views these steps publish ([`FleetView`], [`CohortView`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use super::admission::TimeRules;
use super::cohorts::{CohortAggregator, PartitionReport};
use super::delta::StateDelta;
use super::detection::FleetSums;
use super::retention::Retention;
use super::series::{Series, encode_series};
use super::state::{self, PartitionPosition, PartitionState, SeenSegment, Vehicles};
use crate::model::{ByClass, RegressionAlert};
use crate::partition_id::PartitionId;

/// The cohort series as of the last commit point, shared with the HTTP API (reads): cohort key
/// -> one series per hazard class.
pub type CohortView = RwLock<BTreeMap<String, ByClass<Series>>>;

/// Each source partition's fleet sums as of the last commit point, and how many of its vehicles
/// are out of memory, shared with the HTTP API.
pub type FleetView = RwLock<HashMap<PartitionId, PartitionView>>;

/// A source partition as the HTTP API sees it ([`FleetView`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionView {
    pub fleet: FleetSums,
    /// Vehicles of the partition that have left memory ([`Retention::silent_ms`](super::Retention::silent_ms)).
    pub departed: usize,
}

/// Changes since the last commit, by what they name.
#[derive(Default)]
pub struct Outbox {
    /// Vehicles with changed bins or attributes ([`VehicleState::dirty_bins`](super::VehicleState)).
    pub(super) dirty_vehicles: Vec<String>,
    /// Partitions that read records.
    pub(super) moved_partitions: Vec<PartitionId>,
    /// Vehicles whose series were fed.
    pub(super) dirty_series: Vec<String>,
    /// (aggregator partition, cohort) of cohort series fed.
    pub(super) dirty_cohorts: BTreeSet<(i32, String)>,
    /// Aggregators whose progress changed.
    pub(super) dirty_aggregators: BTreeSet<i32>,
    /// Source partitions that closed bins (their fleet sums changed).
    pub(super) dirty_fleet: BTreeSet<PartitionId>,
    /// Cohort reports for the repartition topic, by its partition.
    pub(super) reports: Vec<(i32, PartitionReport)>,
    /// Alerts published since the last commit, for the store's record.
    pub(super) published: Vec<RegressionAlert>,
    /// Records read since the last commit.
    pub(super) records: usize,
    /// The group view gets everything held at the next commit (partitions were just given).
    pub(super) view_everything: bool,
    /// Vehicles the group view gets whole at the next commit (back in memory).
    pub(super) view_vehicles: BTreeSet<String>,
}

impl Outbox {
    /// A vehicle changed for the first time since the last commit (its bins say which).
    pub fn vehicle_changed(&mut self, vehicle_id: &str) {
        self.dirty_vehicles.push(vehicle_id.to_string());
    }

    /// Whether the next commit has anything to write or send.
    pub fn has_changes(&self) -> bool {
        self.records > 0 || !self.reports.is_empty() || self.view_everything
    }

    /// Forgets what named released partitions.
    pub fn release(&mut self, gone: impl Fn(&PartitionId) -> bool) {
        self.moved_partitions.retain(|p| !gone(p));
        self.dirty_cohorts
            .retain(|(q, _)| !gone(&PartitionId::Cohort(*q)));
        self.dirty_aggregators
            .retain(|q| !gone(&PartitionId::Cohort(*q)));
        self.reports
            .retain(|(_, r)| !gone(&PartitionId::Source(r.source)));
    }
}

/// The changed vehicles' bins, fact and timeline segments and attributes, into `delta`; their
/// partitions note the bins given a first fact.
pub(super) fn take_vehicles(
    ids: Vec<String>,
    vehicles: &Vehicles,
    partition: &mut PartitionState,
    (commit, closed_before): (u64, i64),
    delta: &mut StateDelta,
) {
    // One entry of each per vehicle, most often: reserved once, not grown (and moved) by
    // doubling through a large commit.
    delta.bins.reserve(ids.len());
    delta.vehicles.reserve(ids.len());
    delta.facts.reserve(ids.len());
    delta.timeline.reserve(ids.len());
    for vehicle_id in ids {
        let Some(mut vehicle) = vehicles.get_mut(&vehicle_id) else {
            continue;
        };
        let vehicle = &mut *vehicle;
        // A bin closed before the last commit, written again.
        if let Some(&bin) = vehicle.dirty_bins.first()
            && bin < closed_before
        {
            vehicle.closed_bins_written_at = Some(commit);
        }
        for bin in std::mem::take(&mut vehicle.dirty_bins) {
            delta.bins.push((
                vehicle.partition,
                vehicle_id.clone(),
                bin,
                vehicle.bins[&bin],
            ));
        }
        let timeline = std::mem::take(&mut vehicle.pending_timeline);
        timeline.move_segments(vehicle.partition, &vehicle_id, &mut delta.timeline);
        let facts = std::mem::take(&mut vehicle.pending_facts);
        for (bin_ms, buffer) in &facts.0 {
            partition.note_fact_bin(*bin_ms, buffer.first_offset);
        }
        facts.move_segments(vehicle.partition, &vehicle_id, &mut delta.facts);
        delta
            .vehicles
            .push((vehicle.partition, vehicle_id, vehicle.meta.clone()));
    }
}

/// A partition that read records since the last commit: its new seen ids, its facts' ledger
/// (new bins' first offsets, rejected offsets) and its position, into `delta`. Its seen ids
/// expire below the cutoff, and its fact bins before the facts' horizon. Returns the bins'
/// horizon where it moved on (the bins before it are to retire).
pub(super) fn take_partition(
    p: PartitionId,
    state: &mut PartitionState,
    time: &TimeRules,
    retention: &Retention,
    delta: &mut StateDelta,
) -> Option<i64> {
    let first_offset = state
        .interval_first_offset
        .take()
        .expect("moved partitions have records");
    let entries = std::mem::take(&mut state.pending_seen);
    if let Some(max_time_ms) = entries.iter().map(|(t, _)| *t).max() {
        let segment = SeenSegment {
            partition: p,
            first_offset,
            max_time_ms,
            entries,
        };
        delta.seen.extend(segment.split(state::MAX_SEGMENT_BYTES));
    }
    if state.watermark_ms != i64::MIN {
        state.seen_cutoff_ms = time.seen_cutoff(state);
        let cutoff = state.seen_cutoff_ms;
        state.seen.retain(|_, time| *time >= cutoff);
    }
    let width = time.bin_width_ms;
    let facts_horizon_ms =
        retention.facts_horizon(state.watermark_ms, state.closed_through_ms, width);
    // The facts' ledger: new bins' first offsets, the rejected offsets, and what retention
    // lets go of (bins before the facts' horizon, rejections before the first offset of the
    // bins kept).
    for bin in std::mem::take(&mut state.new_fact_bins) {
        if let Some(offset) = state.fact_bins.get(&bin) {
            delta.fact_bins.push((p, bin, *offset));
        }
    }
    let rejected = std::mem::take(&mut state.pending_rejected);
    if !rejected.is_empty() {
        delta.rejected.push((p, rejected));
    }
    state.fact_bins = state.fact_bins.split_off(&facts_horizon_ms);
    delta.positions.push(PartitionPosition {
        partition: p,
        next_offset: state.next_offset,
        watermark_ms: state.watermark_ms,
        seen_cutoff_ms: state.seen_cutoff_ms,
        closed_through_ms: state.closed_through_ms,
        sampling_scale: state.sampling_scale,
        facts_horizon_ms,
        rejected_floor: state.facts_from(i64::MIN).unwrap_or(state.next_offset),
    });
    let horizon = retention.bins_horizon(state.watermark_ms, state.closed_through_ms, width);
    (horizon > state.bins_horizon_ms).then(|| {
        state.bins_horizon_ms = horizon;
        horizon
    })
}

/// The fed series of vehicles, encoded, into `delta`.
pub(super) fn take_series(ids: Vec<String>, vehicles: &Vehicles, delta: &mut StateDelta) {
    delta.series.reserve(ids.len());
    // Encoded in one buffer and copied out at their size: a bin close encodes every vehicle's
    // series, and a buffer grown by doubling each would hold up to twice their bytes.
    let mut scratch = Vec::new();
    for vehicle_id in ids {
        let Some(mut vehicle) = vehicles.get_mut(&vehicle_id) else {
            continue;
        };
        vehicle.series_dirty = false;
        // (Series are dirty only once fed, so they exist.)
        let Some(series) = &vehicle.series else {
            continue;
        };
        scratch.clear();
        encode_series(series, &mut scratch);
        delta
            .series
            .push((vehicle.partition, vehicle_id, scratch.as_slice().to_vec()));
    }
}

/// The fed cohort series (into `delta`, and into the API's `view` of them) and the changed
/// aggregators' progress (into `delta`).
pub(super) fn take_cohorts(
    fed: BTreeSet<(i32, String)>,
    changed: BTreeSet<i32>,
    aggregators: &BTreeMap<i32, CohortAggregator>,
    view: &CohortView,
    delta: &mut StateDelta,
) {
    if !fed.is_empty() {
        let mut view = view
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (at, key) in &fed {
            view.insert(key.clone(), aggregators[at].series[key].clone());
        }
    }
    for (at, key) in fed {
        let mut bytes = Vec::new();
        encode_series(&aggregators[&at].series[&key], &mut bytes);
        delta.series.push((PartitionId::Cohort(at), key, bytes));
    }
    for at in changed {
        delta.aggregators.push((at, aggregators[&at].progress()));
    }
}
