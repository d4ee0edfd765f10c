//! The stream engine: one implementation for `run`, `demo` and the experiments.
//!
//! Owns the per-record path: size check, decode, validation, lateness against the partition's
//! watermark, duplicate check, then the state update (bins, facts). It never touches Kafka,
//! RocksDB or HTTP: records come in as [`SourceRecord`]s, rejected ones go out as [`Rejection`]s
//! for the caller to dead-letter, and changes leave as a [`StateDelta`] at each commit point.
//! Accepted records move the partition's watermark; bins it passes close and feed the
//! change-point series of [`detection`], whose episode transitions leave as alerts. Under a review
//! budget ([`Engine::with_sampling`]) the policy decides each trip's review from its summary;
//! with a review service ([`Engine::with_review_service`]) selected trips leave as review
//! requests, their bins stay open until the answers come back on the stream, and only those
//! answers count as reviewed critical events.
//! [`runner`] drives it from a [`runner::RecordSource`]; [`memory`] is the in-process source and
//! dead-letter sink of `demo`, tests and benchmarks.

pub mod admission;
pub mod bin_map;
pub mod clocks;
pub mod cohort_router;
pub mod cohorts;
pub mod delta;
pub mod departures;
pub mod detection;
pub mod health;
pub mod ledger;
pub mod members;
pub mod memory;
pub mod outbox;
pub mod restored;
pub mod retention;
pub mod reviews;
pub mod runner;
pub mod series;
pub mod state;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::config::{DetectorConfig, StreamConfig};
use crate::dead_letter::RecentOutcomes;
pub use crate::dead_letter::Rejection;
use crate::metrics::Metrics;
use crate::model::{
    HazardClass, KeyKind, Payload, RecordKind, RegressionAlert, ReviewRequest, TelemetryEvent,
};
pub use crate::partition_id::{PartitionId, StoredPartition};
use crate::sampling::SamplingPolicy;
pub use admission::SourceRecord;
use admission::TimeRules;
pub use bin_map::BinMap;
use cohort_router::{CohortRouter, RouteEffects};
use cohorts::{CohortAggregator, PartitionReport};
pub use delta::StateDelta;
use departures::Departures;
use detection::{
    DetectionSettings, FleetSums, VehicleSet, decode_series, encode_series, is_current_series,
};
use members::{Members, last_bin};
use outbox::Outbox;
pub use outbox::{CohortView, FleetView, PartitionView};
pub use restored::{RestoreError, RestoredState};
pub use retention::{Retention, VehicleArchive};
use reviews::{ReviewDesk, review_hold};
pub use state::{
    BinStats, FactSegment, FnvHashBuilder, IdHashBuilder, PartitionPosition, PartitionState,
    PendingReview, Prior, RETIRED_BIN, RecentRecord, SeenSegment, VehicleMeta, VehicleState,
    Vehicles, fact_records, id_hash,
};

impl VehicleSet for Vehicles {
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BinMap)) {
        for vehicle in self.iter() {
            f(&vehicle.meta, &vehicle.bins);
        }
    }
}

/// The vehicles of one source partition, found by a scan of every vehicle: what the tests
/// compare the engine's index ([`HeldVehicles`]) with.
#[cfg(test)]
pub struct PartitionVehicles<'a>(pub &'a Vehicles, pub PartitionId);

/// The vehicles the engine holds for one source partition, through its index.
struct HeldVehicles<'a> {
    vehicles: &'a Vehicles,
    members: &'a Members,
    partition: PartitionId,
}

impl VehicleSet for HeldVehicles<'_> {
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BinMap)) {
        for id in self.members.of(self.partition) {
            if let Some(vehicle) = self.vehicles.get(id) {
                f(&vehicle.meta, &vehicle.bins);
            }
        }
    }
}

#[cfg(test)]
impl VehicleSet for PartitionVehicles<'_> {
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BinMap)) {
        for vehicle in self.0.iter().filter(|v| v.partition == self.1) {
            f(&vehicle.meta, &vehicle.bins);
        }
    }
}

/// Per-record processing and the hot state it updates: a coordinator of admission
/// ([`admission`]), the vehicles' bins, the [`ReviewDesk`], the [`CohortRouter`], the vehicles out
/// of memory ([`Departures`]) and the commit [`Outbox`].
pub struct Engine {
    config: StreamConfig,
    time: TimeRules,
    retention: Retention,
    /// Whether commits carry what the group view learns of them ([`view`]).
    publishes_view: bool,
    /// Vehicles that left memory (silent), and the archive that brings them back.
    departed: Departures,
    /// The number of the next commit ([`Engine::take_delta`]), from 1.
    commits: u64,
    vehicles: Arc<Vehicles>,
    /// Which vehicles each partition holds, by their last bin.
    members: Members,
    partitions: HashMap<PartitionId, PartitionState>,
    detection: DetectionSettings,
    /// Where cohort reports go, and the cohort aggregators held here.
    cohorts: CohortRouter,
    cohort_view: Arc<CohortView>,
    fleet_view: Arc<FleetView>,
    /// Alerts raised since the last commit point, oldest first.
    alerts: Vec<RegressionAlert>,
    /// The record just accepted let this partition close a bin still open.
    close_due: Option<PartitionId>,
    /// Bins closed (commit number then, partition, closed through): once that commit's
    /// changes are durable, their vehicles' bins before it may leave memory for the store.
    closings: std::collections::VecDeque<(u64, PartitionId, i64)>,
    /// Each partition's closed-through as of the last commit: a bin before it written again
    /// (a review's answer) is a rewrite, which its vehicle must wait out.
    closed_at_last_commit: HashMap<PartitionId, i64>,
    /// The record just accepted moved its vehicle away from this partition, where it was one
    /// of the few most advanced.
    clocks_to_rebuild: Option<PartitionId>,
    /// Per-vehicle priors from the last refit that converged.
    priors: HashMap<String, Prior>,
    /// Under a review budget: which trips are reviewed, and the review service's round trip.
    reviews: ReviewDesk,
    /// Where a scheduled refit sends new priors (already durable in the store).
    refits: Option<std::sync::mpsc::Receiver<Vec<(String, Prior)>>>,
    /// What the next commit writes and sends.
    outbox: Outbox,
    /// The outcomes of the last records, for the dead-letter share `/health` reports.
    recent: RecentOutcomes,
    pub(crate) metrics: Metrics,
}

impl Engine {
    pub fn new(
        config: StreamConfig,
        detector: &DetectorConfig,
        restored: RestoredState,
        metrics: Metrics,
    ) -> Result<Engine, RestoreError> {
        let time = TimeRules {
            bin_width_ms: config.bin_width_s * 1000,
            allowed_lateness_ms: config.allowed_lateness_s * 1000,
            max_clock_skew_ms: config.max_clock_skew_s * 1000,
            watermark_quorum: config.watermark_quorum,
        };
        let detection =
            DetectionSettings::new(detector, time.bin_width_ms, time.allowed_lateness_ms);
        let recent = RecentOutcomes::new(config.dlq_window_records, config.max_dlq_share);
        let mut engine = Engine {
            config,
            time,
            retention: Retention::KEEP_ALL,
            publishes_view: false,
            departed: Departures::default(),
            commits: 1,
            recent,
            vehicles: Arc::new(Vehicles::default()),
            members: Members::default(),
            partitions: HashMap::new(),
            detection,
            cohorts: CohortRouter::default(),
            cohort_view: Arc::new(CohortView::default()),
            fleet_view: Arc::new(FleetView::default()),
            alerts: Vec::new(),
            close_due: None,
            closings: std::collections::VecDeque::new(),
            closed_at_last_commit: HashMap::new(),
            clocks_to_rebuild: None,
            priors: HashMap::new(),
            refits: None,
            reviews: ReviewDesk::default(),
            outbox: Outbox::default(),
            metrics,
        };
        engine.adopt(restored)?;
        Ok(engine)
    }

    /// Takes over restored state (at start-up, or partitions this process was just given): its
    /// vehicles, partitions, series and cohort aggregators join what the engine holds.
    pub fn adopt(&mut self, restored: RestoredState) -> Result<(), RestoreError> {
        self.use_priors(restored.priors);
        let mut restored_vehicle_partitions = BTreeSet::new();
        for (id, mut state) in restored.vehicles {
            restored_vehicle_partitions.insert(state.partition);
            // Restored state is in the store already: a silent vehicle may leave memory at its
            // partition's next commit.
            state.quiet_since_commit = Some(self.commits - 1);
            let width = self.time.bin_width_ms;
            if let Some(held) = self.vehicles.get(&id) {
                self.members
                    .leave(held.partition, &id, last_bin(&held, width));
            }
            self.members
                .join(state.partition, &id, last_bin(&state, width));
            self.vehicles.insert(id, state);
        }
        for (aggregator, progress) in restored.aggregators {
            self.cohorts.aggregators.insert(
                aggregator,
                CohortAggregator::default().with_progress(progress),
            );
        }
        for (partition, key, bytes) in restored.series {
            if !is_current_series(&bytes) {
                tracing::warn!(key = %key, "change-point state of the earlier self-baseline detector is not used: the series starts again");
                continue;
            }
            let series =
                decode_series(self.detection.params, &bytes).map_err(|source| RestoreError {
                    partition,
                    key: key.clone(),
                    source,
                })?;
            if let PartitionId::Cohort(aggregator) = partition {
                self.cohorts
                    .aggregators
                    .entry(aggregator)
                    .or_default()
                    .series
                    .insert(key, series);
            } else if let Some(mut vehicle) = self.vehicles.get_mut(&key) {
                vehicle.series = Some(Box::new(series));
            }
        }
        for (&partition, state) in &restored.partitions {
            // What was restored is in the store: its closed bins may leave memory at once.
            if partition.is_source() && state.closed_through_ms != i64::MIN {
                let durable = self.commits.saturating_sub(2);
                self.closings
                    .push_back((durable, partition, state.closed_through_ms));
                self.closed_at_last_commit
                    .insert(partition, state.closed_through_ms);
            }
        }
        let mut adopted: BTreeSet<PartitionId> = restored.partitions.keys().copied().collect();
        adopted.extend(restored_vehicle_partitions);
        let mut fleet_sums = restored.fleet_sums;
        for (partition, mut state) in restored.partitions {
            // The fleet the partition's vehicles are compared with: its closed bins.
            state.fleet_sums = match fleet_sums.remove(&partition) {
                Some(sums) => sums,
                None => {
                    // A store from before fleet sums were kept: sum the bins (all still there)
                    // and keep the sums with the next commit, before any bin retires.
                    if state.closed_through_ms != i64::MIN && partition.is_source() {
                        self.outbox.dirty_fleet.insert(partition);
                    }
                    FleetSums::of(
                        &self.detection,
                        &self.held(partition),
                        state.closed_through_ms,
                    )
                }
            };
            self.partitions.insert(partition, state);
        }
        for vehicle in self.vehicles.iter() {
            if !adopted.contains(&vehicle.partition) {
                continue;
            }
            let state = self.partitions.entry(vehicle.partition).or_default();
            for review in &vehicle.meta.pending_reviews {
                state
                    .review_holds
                    .insert(review_hold(vehicle.key(), review));
            }
        }
        for &partition in &adopted {
            self.rebuild_clocks(partition);
        }
        self.refresh_cohort_view();
        self.refresh_fleet_view();
        self.refresh_gauges();
        Ok(())
    }

    /// Rebuilds a partition's vehicle clocks from its vehicles' latest record times (the
    /// watermark they give never takes it back).
    fn rebuild_clocks(&mut self, partition: PartitionId) {
        let quorum = self.time.watermark_quorum;
        let latest: Vec<(String, i64)> = self
            .members
            .of(partition)
            .filter_map(|id| {
                let vehicle = self.vehicles.get(id)?;
                Some((id.to_string(), vehicle.meta.last_event_time_ms))
            })
            .collect();
        let state = self.partitions.entry(partition).or_default();
        state.clocks =
            admission::VehicleClocks::of(latest.iter().map(|(v, t)| (v.as_str(), *t)), quorum);
        self.time.advance_watermark(state);
    }

    /// Lets go of partitions (given to another process): their vehicles, positions and cohort
    /// aggregators leave the engine. What was not committed is dropped; the next owner redoes
    /// it from the committed state.
    pub fn release(&mut self, partitions: &[PartitionId]) {
        let gone = |p: &PartitionId| partitions.contains(p);
        for id in self.members.release(gone) {
            self.vehicles.remove(&id);
        }
        self.partitions.retain(|p, _| !gone(p));
        self.cohorts.release(gone);
        self.departed.release(gone);
        self.outbox.release(gone);
        self.refresh_cohort_view();
        self.refresh_fleet_view();
        self.refresh_gauges();
    }

    /// Every partition number the engine holds state for: source partitions (with positions or
    /// vehicles) and cohort aggregators.
    pub fn held_partitions(&self) -> Vec<PartitionId> {
        let mut held: BTreeSet<PartitionId> = self.partitions.keys().copied().collect();
        held.extend(
            self.cohorts
                .aggregators
                .keys()
                .map(|&q| PartitionId::Cohort(q)),
        );
        held.extend(self.members.partitions());
        held.into_iter().collect()
    }

    /// Keeps state only as far back in event time as `retention` says.
    pub fn with_retention(mut self, retention: Retention) -> Engine {
        self.retention = retention;
        self.detection.pause_after_ms = retention.silent_ms;
        self
    }

    /// Lets silent vehicles ([`Retention::silent_ms`]) leave memory: `archive` (the state
    /// store) gives them back when they send again.
    pub fn with_archive(mut self, archive: Arc<dyn VehicleArchive>) -> Engine {
        self.departed.set_archive(archive);
        self
    }

    /// Vehicles that have left memory, silent, and are in the store.
    pub fn departed_vehicles(&self) -> usize {
        self.departed.count()
    }

    /// Sets the gauges that follow from the state held (after a restore or a release).
    fn refresh_gauges(&self) {
        let metrics = &self.metrics;
        metrics.vehicles.set(self.vehicles.len() as i64);
        let open = self
            .vehicles
            .iter()
            .map(|v| v.open_episodes())
            .sum::<usize>()
            + self
                .cohorts
                .aggregators
                .values()
                .flat_map(|a| a.series.values().flat_map(|s| s.values()))
                .filter(|s| s.episode.open.is_some())
                .count();
        metrics.open_episodes.set(open as i64);
        let pending_reviews: usize = self
            .vehicles
            .iter()
            .map(|v| v.meta.pending_reviews.len())
            .sum();
        metrics.reviews_pending.set(pending_reviews as i64);
    }

    /// Rebuilds the API's view of the cohort series from the aggregators.
    fn refresh_fleet_view(&self) {
        let mut view = self
            .fleet_view
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        view.clear();
        for (p, state) in &self.partitions {
            if p.is_source() {
                let departed = self.departed.in_partition(*p);
                let fleet = state.fleet_sums.clone();
                view.insert(*p, PartitionView { fleet, departed });
            }
        }
    }

    fn refresh_cohort_view(&self) {
        let mut view = self
            .cohort_view
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *view = self.cohorts();
    }

    /// Sends the partitions' cohort reports through a repartition topic of `partitions`
    /// partitions instead of to an aggregator in process: they leave with each commit
    /// ([`StateDelta::cohort_reports`]) and come back as records of [`PartitionId::Cohort`],
    /// wherever the consumer group assigns them.
    pub fn with_cohort_topic(mut self, partitions: i32) -> Engine {
        self.cohorts.use_topic(partitions);
        self
    }

    /// How many partitions the input topic has: with the repartition topic, cohort bins close
    /// once every one of them has reported (or reported itself empty).
    pub fn set_source_partitions(&mut self, partitions: i32) {
        self.cohorts.set_source_partitions(partitions);
    }

    /// Counts critical events only from trips `policy` selects for review, and feeds the
    /// critical-class detectors the reviewed trips' events and risk-scaled exposure
    /// (docs/design.md §4).
    pub fn with_sampling(mut self, policy: SamplingPolicy) -> Engine {
        self.detection.reviewed = true;
        self.detection.sampling_policy = policy.policy.name();
        self.reviews.use_policy(policy);
        self
    }

    /// Under a review budget, asks a review service instead of reading critical events from the
    /// stream: each selected trip becomes a [`ReviewRequest`] (see
    /// [`Engine::take_review_requests`]), its bins stay open until the service's
    /// [`ReviewResult`](crate::model::ReviewResult) arrives on the stream, and only those results'
    /// critical events count as reviewed. A review not answered by the time the partition's
    /// watermark is `timeout_ms` past its trip's start is given up (the trip counts as
    /// unreviewed).
    pub fn with_review_service(mut self, timeout_ms: i64) -> Engine {
        self.reviews.use_service(timeout_ms);
        self
    }

    /// Review requests made since the last call, oldest first: to be published before the next
    /// commit (which records them as pending).
    pub fn take_review_requests(&mut self) -> Vec<ReviewRequest> {
        self.reviews.take_requests()
    }

    /// Tells the engine which source partitions it reads (their numbers, with end offsets where
    /// known). With the repartition topic, a partition known to be empty (no record, at its
    /// end) is reported so, so that cohort bins do not wait for it.
    pub fn set_input_partitions(&mut self, inputs: &[(i32, Option<i64>)]) {
        self.cohorts
            .set_inputs(inputs, &self.partitions, &mut self.outbox);
    }

    /// The vehicles held for `partition`.
    fn held(&self, partition: PartitionId) -> HeldVehicles<'_> {
        HeldVehicles {
            vehicles: &self.vehicles,
            members: &self.members,
            partition,
        }
    }

    /// What routing a cohort report may change besides the router.
    fn route_effects(&mut self) -> (&mut CohortRouter, RouteEffects<'_>) {
        let effects = RouteEffects {
            detection: &self.detection,
            partitions: &self.partitions,
            outbox: &mut self.outbox,
            alerts: &mut self.alerts,
            metrics: &self.metrics,
        };
        (&mut self.cohorts, effects)
    }

    /// A record of the repartition topic: a source partition's cohort report.
    fn process_report(
        &mut self,
        record: &SourceRecord<'_>,
        aggregator: i32,
    ) -> Result<RecordKind, Rejection> {
        let result = match serde_json::from_slice::<PartitionReport>(record.payload) {
            Ok(report) => {
                let (router, effects) = self.route_effects();
                router.aggregate(aggregator, report, effects);
                Ok(RecordKind::CohortReport)
            }
            Err(e) => Err(Rejection::CohortReport(e.to_string())),
        };
        // (Reports make no facts: nothing for a ledger to skip.)
        self.advance_position(record, false);
        result
    }

    /// The record's partition has read it: its next offset moves past it.
    /// Moves the partition past the record; a rejected one is noted in its ledger (what a
    /// rebuild of the facts from the input must skip).
    fn advance_position(&mut self, record: &SourceRecord<'_>, rejected: bool) {
        let partition = self.partitions.entry(record.partition).or_default();
        partition.next_offset = record.offset + 1;
        if rejected {
            partition.pending_rejected.push(record.offset);
        }
        if partition.interval_first_offset.is_none() {
            partition.interval_first_offset = Some(record.offset);
            self.outbox.moved_partitions.push(record.partition);
        }
        self.outbox.records += 1;
    }

    /// Alerts raised since the last call, oldest first: to be published before the next commit
    /// (which also records them in the store).
    pub fn take_alerts(&mut self) -> Vec<RegressionAlert> {
        let alerts = std::mem::take(&mut self.alerts);
        self.outbox.published.extend(alerts.iter().cloned());
        alerts
    }

    /// Alerts raised and not yet taken.
    pub fn raised_alerts(&self) -> usize {
        self.alerts.len()
    }

    /// New per-vehicle priors (a refit that converged, already in the store): their spread
    /// becomes the critical class's fleet spread from the next bin on (and its opening rule is
    /// calibrated for it); the fleet's mean stays the stream's.
    pub fn use_priors(&mut self, priors: Vec<(String, Prior)>) {
        if priors.is_empty() {
            return;
        }
        self.priors.extend(priors);
        // The refit's vehicles measure how much rates vary across the fleet (critical events).
        if let Some(shape) = detection::shape_of_priors(self.priors.values()) {
            self.detection.use_fleet_shape(HazardClass::Critical, shape);
        }
    }

    /// Takes priors from refits scheduled on another thread (see [`Engine::apply_received_priors`]).
    pub fn receive_priors(&mut self, refits: std::sync::mpsc::Receiver<Vec<(String, Prior)>>) {
        self.refits = Some(refits);
    }

    /// Applies priors that arrived since the last call; the run loop calls it between polls.
    pub fn apply_received_priors(&mut self) {
        let received: Vec<Vec<(String, Prior)>> = match &self.refits {
            Some(refits) => refits.try_iter().collect(),
            None => return,
        };
        for priors in received {
            self.use_priors(priors);
        }
    }

    /// The prior a vehicle's detectors use, if a refit set one.
    pub fn prior(&self, vehicle_id: &str) -> Option<Prior> {
        self.priors.get(vehicle_id).copied()
    }

    /// The cohort series (key -> one per hazard class) of the aggregators held here.
    pub fn cohorts(&self) -> BTreeMap<String, crate::model::ByClass<detection::Series>> {
        self.cohorts
            .aggregators
            .values()
            .flat_map(|a| a.series.iter().map(|(k, s)| (k.clone(), s.clone())))
            .collect()
    }

    /// The cohort series as of the last commit point, for the HTTP API.
    pub fn cohort_view(&self) -> Arc<CohortView> {
        Arc::clone(&self.cohort_view)
    }

    /// Each source partition's fleet sums as of the last commit point.
    pub fn fleet_view(&self) -> Arc<FleetView> {
        Arc::clone(&self.fleet_view)
    }

    /// How bins close and feed the change-point series, for views that replay a series.
    pub fn detection_settings(&self) -> &DetectionSettings {
        &self.detection
    }

    /// Shared read access to vehicle state, for the HTTP API.
    pub fn vehicles(&self) -> Arc<Vehicles> {
        Arc::clone(&self.vehicles)
    }

    /// Next offset to read per partition, as of the records processed so far.
    pub fn positions(&self) -> HashMap<PartitionId, i64> {
        self.partitions
            .iter()
            .map(|(p, s)| (*p, s.next_offset))
            .collect()
    }

    /// Records processed since the last commit point.
    pub fn pending_records(&self) -> usize {
        self.outbox.records
    }

    /// How large the next commit is, in records' worth: the records processed since the
    /// last, and each series fed since as [`SERIES_WEIGHT`] records (a bin close feeds every
    /// series of its partition at once, ~1-2 KB each, where a record adds ~100 bytes). A commit
    /// is due at `state.commit_max_records` of it, which bounds what a commit holds.
    pub fn pending_weight(&self) -> usize {
        self.outbox.records + self.pending_series_weight()
    }

    /// The part of [`Engine::pending_weight`] that the series fed since the last commit make.
    pub fn pending_series_weight(&self) -> usize {
        self.outbox.dirty_series.len() * SERIES_WEIGHT
    }

    /// Whether the next commit point has anything to commit: records processed, or cohort
    /// reports to send (an idle partition announcing itself empty).
    pub fn has_pending_changes(&self) -> bool {
        self.outbox.has_changes()
    }

    /// Commits carry what the group view learns of them ([`StateDelta::view`]).
    pub fn with_group_view(mut self) -> Engine {
        self.publishes_view = true;
        self
    }

    /// The next commit gives the group view everything held (the partitions just assigned),
    /// whatever it had of them before.
    pub fn republish_view(&mut self) {
        self.outbox.view_everything = self.publishes_view;
    }

    /// Processes one record. `Err` means the record did not change state (apart from the
    /// partition's offset) and belongs in the dead-letter topic.
    pub fn process(&mut self, record: &SourceRecord<'_>) -> Result<RecordKind, Rejection> {
        let source = match record.partition {
            PartitionId::Cohort(aggregator) => return self.process_report(record, aggregator),
            PartitionId::Source(n) => n,
        };
        self.metrics.records_received.inc();
        let result = self.apply(record);
        if let Some(partition) = self.clocks_to_rebuild.take() {
            self.rebuild_clocks(partition);
        }
        if let Some(partition) = self.close_due.take() {
            self.close_bins(partition);
        }
        self.advance_position(record, result.is_err());
        match &result {
            Ok(kind) => self.metrics.records_accepted(*kind).inc(),
            Err(rejection) => self.metrics.dlq_records(rejection.reason()).inc(),
        }
        self.recent
            .push(source, result.as_ref().err().map(Rejection::reason));
        result
    }

    fn apply(&mut self, record: &SourceRecord<'_>) -> Result<RecordKind, Rejection> {
        let event = admission::read(record, self.config.max_record_bytes, &self.time)?;
        if let Payload::Review(result) = &event.payload {
            return self.apply_review(record, &event, result);
        }
        // Before any check that records the record: a failure leaves no trace of it, and the
        // vehicle stays out (in the store) for its next record.
        if let Some((stored_under, vehicle)) = self
            .departed
            .bring_back(&event.vehicle_id, self.detection.params)?
        {
            self.returned(stored_under, &event.vehicle_id, vehicle);
        }
        let partition = self.partitions.entry(record.partition).or_default();
        let admitted = admission::admit(&self.time, partition, &event)?;
        self.reviews
            .give_up_late(partition, &self.vehicles, &mut self.outbox, &self.metrics);
        if partition.may_close(self.time.bin_width_ms, self.time.allowed_lateness_ms) {
            self.close_due = Some(record.partition);
        }
        self.count_in_vehicle(record, &event, admitted);
        Ok(event.kind())
    }

    /// An admitted record counts in its vehicle's bin (the vehicle is new, or moves here with
    /// its state if its records came from another partition before), its attributes and its
    /// review, and is kept as a fact.
    fn count_in_vehicle(
        &mut self,
        record: &SourceRecord<'_>,
        event: &TelemetryEvent<'_>,
        admitted: admission::Admitted,
    ) {
        let admission::Admitted { time_ms: time, bin } = admitted;
        let counts = BinStats::of_payload(&event.payload);
        let vehicle_id: &str = &event.vehicle_id;
        let width = self.time.bin_width_ms;
        let mut indexed = None;
        let mut vehicle = match self.vehicles.get_mut(vehicle_id) {
            Some(v) => {
                indexed = Some((v.partition, last_bin(&v, width)));
                v
            }
            None => {
                self.vehicles.insert(
                    vehicle_id.to_string(),
                    VehicleState {
                        partition: record.partition,
                        ..VehicleState::default()
                    },
                );
                self.metrics.vehicles.inc();
                self.vehicles.get_mut(vehicle_id).expect("just inserted")
            }
        };
        let vehicle = &mut *vehicle;
        let moved_from = (vehicle.partition != record.partition).then_some(vehicle.partition);
        vehicle.partition = record.partition;
        if vehicle.add(bin, &counts) {
            self.outbox.vehicle_changed(vehicle_id);
        }
        // The clock the partition's watermark follows.
        vehicle.meta.last_event_time_ms = vehicle.meta.last_event_time_ms.max(time);
        if let Some(from) = moved_from {
            // The vehicle moved here (the topic was repartitioned): its latest time counts here
            // now, and its old partition's few most advanced are found again without it if it
            // was one of them.
            let quorum = self.time.watermark_quorum;
            let partition = self
                .partitions
                .get_mut(&record.partition)
                .expect("admitted above");
            partition
                .clocks
                .observe(vehicle_id, vehicle.meta.last_event_time_ms, quorum);
            self.time.advance_watermark(partition);
            if self
                .partitions
                .get(&from)
                .is_some_and(|p| p.clocks.holds(vehicle_id))
            {
                self.clocks_to_rebuild = Some(from);
            }
        }
        vehicle.meta.note_record(&event.payload);
        if self.publishes_view {
            vehicle.meta.note_recent_record(&event.payload, time);
        }
        match &event.payload {
            Payload::Safety(e) if e.is_critical() => {
                self.reviews.note_critical_event(vehicle, &e.trip_id, bin);
            }
            Payload::Trip(t) if self.reviews.is_sampling() => {
                let partition = self
                    .partitions
                    .get_mut(&record.partition)
                    .expect("admitted above");
                let (detection, metrics) = (&self.detection, &self.metrics);
                if self.reviews.decide_trip(
                    vehicle_id,
                    vehicle,
                    t,
                    counts.exposure_ms,
                    partition,
                    detection,
                    width,
                    metrics,
                ) {
                    self.outbox.vehicle_changed(vehicle_id);
                }
            }
            _ => {}
        }
        vehicle.keep_facts(bin, record.offset, record.payload, event);
        // Not silent: it waits a whole commit again before it may leave memory.
        vehicle.quiet_since_commit = None;
        self.members.update(
            vehicle_id,
            indexed,
            (vehicle.partition, last_bin(vehicle, width)),
        );
    }

    /// A review service's answer: the trip's reviewed exposure and its critical events enter its
    /// vehicle's bins (held open for it), and the hold is released.
    fn apply_review(
        &mut self,
        record: &SourceRecord<'_>,
        event: &TelemetryEvent<'_>,
        result: &crate::model::ReviewResult<'_>,
    ) -> Result<RecordKind, Rejection> {
        let vehicle_id: &str = &event.vehicle_id;
        let mut vehicle =
            self.vehicles
                .get_mut(vehicle_id)
                .ok_or_else(|| Rejection::UnrequestedReview {
                    trip_id: result.trip_id.to_string(),
                })?;
        let vehicle = &mut *vehicle;
        let width = self.time.bin_width_ms;
        let partition = self.partitions.entry(vehicle.partition).or_default();
        if self
            .reviews
            .answer(vehicle_id, vehicle, result, partition, width, &self.metrics)?
        {
            self.outbox.vehicle_changed(vehicle_id);
        }
        if partition.may_close(width, self.time.allowed_lateness_ms) {
            self.close_due = Some(vehicle.partition);
        }
        // Kept under the bin of its record time, as every record is (what a rebuild of the
        // facts from the input finds again).
        let bin = TimeRules::record_time(event).div_euclid(width) * width;
        vehicle.keep_facts(bin, record.offset, record.payload, event);
        Ok(RecordKind::Review)
    }

    /// Closes the bins the partition's watermark has passed (plus lateness): its vehicles' first,
    /// then the cohorts' once every partition has passed them.
    fn close_bins(&mut self, partition: PartitionId) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        if state.watermark_ms == i64::MIN {
            return;
        }
        let through = state.closable_through(self.time.bin_width_ms, self.time.allowed_lateness_ms);
        if through <= state.closed_through_ms {
            return;
        }
        let from = state.closed_through_ms;
        state.closed_through_ms = through;
        let mut fleet = std::mem::take(&mut state.fleet_sums);
        let alerts_before = self.alerts.len();
        let first_bin = self
            .members
            .of(partition)
            .filter_map(|id| self.vehicles.get(id)?.bins.keys().next().copied())
            .min();
        let start = match from {
            i64::MIN => first_bin.unwrap_or(through).min(through),
            from => from,
        };
        // Bin by bin from the partition's first bin with data, every vehicle against the fleet
        // of the bins closed so far and this one; once the fleet has bins, from the first bin
        // not closed, whatever retention has taken before it.
        let mut bin = match first_bin {
            Some(first) if fleet.is_empty() => first.max(start),
            Some(_) => start,
            None => through,
        };
        let mut fed = 0;
        while bin < through {
            let mut totals = BinStats::default();
            for id in self.members.of(partition) {
                if let Some(stats) = self
                    .vehicles
                    .get(id)
                    .and_then(|v| v.bins.get(&bin).copied())
                {
                    totals.add(&stats);
                }
            }
            fleet.push(&self.detection, totals);
            for id in self.members.of(partition) {
                let Some(mut entry) = self.vehicles.get_mut(id) else {
                    continue;
                };
                let (id, vehicle) = entry.pair_mut();
                let (bins_fed, bin_changed) = detection::close_vehicle_bin(
                    &self.detection,
                    id,
                    vehicle,
                    &fleet,
                    bin,
                    &mut self.alerts,
                );
                if bins_fed > 0 {
                    fed += bins_fed;
                    if !std::mem::replace(&mut vehicle.series_dirty, true) {
                        self.outbox.dirty_series.push(id.clone());
                    }
                }
                // The bin now carries the fleet's expected counts.
                if bin_changed && vehicle.touch(bin) {
                    self.outbox.vehicle_changed(id);
                }
            }
            bin += self.time.bin_width_ms;
        }
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.fleet_sums = fleet;
            self.outbox.dirty_fleet.insert(partition);
        }
        self.closings.push_back((self.commits, partition, through));
        if fed > 0 {
            self.metrics
                .detector_updates(KeyKind::Vehicle)
                .inc_by(fed * HazardClass::COUNT as u64);
            self.metrics.bins_closed(KeyKind::Vehicle).inc_by(fed);
        }
        self.metrics.count_alerts(&self.alerts[alerts_before..]);
        if let (false, Some(source)) = (self.detection.cohorts.is_empty(), partition.source()) {
            let vehicles = self.held(partition);
            let report = PartitionReport::build(&self.detection, source, &vehicles, start, through);
            let (router, effects) = self.route_effects();
            router.route(report, effects);
        }
    }

    /// A vehicle that left memory sent again, and its committed state came back from the
    /// archive.
    fn returned(&mut self, stored_under: PartitionId, vehicle_id: &str, mut vehicle: VehicleState) {
        // What it comes back with is in the store: its closed bins stay there.
        if self.keeps_history_in_store() {
            let closed = self
                .partitions
                .get(&vehicle.partition)
                .map_or(i64::MIN, |p| p.closed_through_ms);
            retention::store_closed_bins(&mut vehicle, closed);
        }
        let at = last_bin(&vehicle, self.time.bin_width_ms);
        self.members.join(vehicle.partition, vehicle_id, at);
        self.vehicles.insert(vehicle_id.to_string(), vehicle);
        if self.publishes_view {
            self.outbox.view_vehicles.insert(vehicle_id.to_string());
        }
        self.metrics.vehicles.inc();
        self.metrics.vehicles_returned.inc();
        let mut view = self
            .fleet_view
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(view) = view.get_mut(&stored_under) {
            view.departed = view.departed.saturating_sub(1);
        }
    }

    /// Vehicles of partition `p` that may leave memory ([`retention::may_leave`]) since an
    /// earlier commit (so the store holds all they knew) leave it.
    /// Returns those that left, with their bins.
    fn let_silent_vehicles_go(
        &mut self,
        p: PartitionId,
        silent_ms: i64,
    ) -> Vec<(String, Vec<i64>)> {
        let Some(state) = self.partitions.get(&p) else {
            return Vec::new();
        };
        let (closed, width, now) = (
            state.closed_through_ms,
            self.time.bin_width_ms,
            self.commits,
        );
        let mut leaving = Vec::new();
        // Only a vehicle whose last bin is this far behind may leave; the others were reset
        // when their last record came.
        for id in self
            .members
            .silent_through(p, closed.saturating_sub(silent_ms))
        {
            let Some(mut entry) = self.vehicles.get_mut(id) else {
                continue;
            };
            let (id, vehicle) = entry.pair_mut();
            if !retention::may_leave(vehicle, silent_ms, closed, width) || state.clocks.holds(id) {
                vehicle.quiet_since_commit = None;
                continue;
            }
            // Commits start only once the one before is durable: what this vehicle last
            // changed (in commit `since` or before) is in the store by the next commit.
            match vehicle.quiet_since_commit {
                Some(since) if now > since => leaving.push(id.clone()),
                Some(_) => {}
                None => vehicle.quiet_since_commit = Some(now),
            }
        }
        let left = leaving.len();
        let mut gone = Vec::with_capacity(left);
        for id in leaving {
            if let Some((_, vehicle)) = self.vehicles.remove(&id) {
                self.members.leave(p, &id, last_bin(&vehicle, width));
                self.departed.leave(id.clone(), p, &vehicle);
                self.metrics.vehicles.dec();
                self.metrics.vehicles_departed.inc();
                let mut bins: Vec<i64> = vehicle.bins.keys().copied().collect();
                if vehicle.retired != BinStats::default() {
                    bins.push(RETIRED_BIN);
                }
                gone.push((id, bins));
            }
        }
        if left > 0 {
            let departed = self.departed.in_partition(p);
            let mut view = self
                .fleet_view
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            view.entry(p).or_default().departed = departed;
        }
        gone
    }

    /// Whether closed bins leave memory for the store (docs/design.md §7): where there is a
    /// store to read them back from, and no group view, whose first publication of a vehicle
    /// carries all its bins.
    fn keeps_history_in_store(&self) -> bool {
        self.departed.may_depart() && !self.publishes_view
    }

    /// The closed bins that the store surely holds (closed two commits ago or more, and not
    /// written since) leave memory: a partition's vehicles visited once per bin it closes.
    fn let_durable_bins_go(&mut self) {
        if !self.keeps_history_in_store() {
            self.closings.clear();
            return;
        }
        let now = self.commits;
        let durable = |written: Option<u64>| written.is_none_or(|at| at + 2 <= now);
        while let Some(&(closed_at, p, through)) = self.closings.front() {
            if closed_at + 2 > now {
                break;
            }
            self.closings.pop_front();
            let mut stored = 0;
            for id in self.members.of(p) {
                let Some(mut vehicle) = self.vehicles.get_mut(id) else {
                    continue;
                };
                if durable(vehicle.closed_bins_written_at) {
                    stored += retention::store_closed_bins(&mut vehicle, through);
                }
            }
            self.metrics.bins_stored.inc_by(stored as u64);
        }
    }

    /// Retires the bins of partition `p`'s vehicles before `horizon_ms` into their sums.
    fn retire_bins(&mut self, p: PartitionId, horizon_ms: i64, delta: &mut StateDelta) {
        let width = self.time.bin_width_ms;
        let held: Vec<String> = self.members.of(p).map(str::to_string).collect();
        for id in held {
            let Some(mut entry) = self.vehicles.get_mut(&id) else {
                continue;
            };
            let vehicle = entry.value_mut();
            let before = last_bin(vehicle, width);
            let mut expired = self.retire_stored_bins(p, &id, vehicle, horizon_ms);
            expired.extend(retention::retire_bins(vehicle, horizon_ms));
            if expired.is_empty() {
                continue;
            }
            self.members
                .update(&id, Some((p, before)), (p, last_bin(vehicle, width)));
            // What it may leave memory with changed in this very commit: wait again.
            vehicle.quiet_since_commit = None;
            self.metrics.bins_retired.inc_by(expired.len() as u64);
            delta
                .bins
                .push((p, id.clone(), RETIRED_BIN, vehicle.retired));
            delta
                .expired_bins
                .extend(expired.into_iter().map(|bin| (p, id.clone(), bin)));
        }
        self.departed.retire_stored(p, horizon_ms, delta);
    }

    /// The bins of `vehicle` that only the store holds, before `horizon_ms`, join its retired
    /// sum (read back from the archive; if it cannot be read, they wait for the next
    /// retirement). Returns their starts.
    fn retire_stored_bins(
        &self,
        p: PartitionId,
        id: &str,
        vehicle: &mut VehicleState,
        horizon_ms: i64,
    ) -> Vec<i64> {
        if vehicle.stored.count == 0 || vehicle.stored.first_ms >= horizon_ms {
            return Vec::new();
        }
        let Some(archive) = self.departed.archive() else {
            return Vec::new();
        };
        match archive.stored_bins(p, id) {
            Ok(stored) => retention::retire_stored_bins(vehicle, &stored, horizon_ms),
            Err(error) => {
                tracing::warn!(%error, vehicle_id = id, "a vehicle's stored bins could not be read to retire them; they wait for the next retirement");
                Vec::new()
            }
        }
    }

    /// Takes everything changed since the last call (the next commit's [`StateDelta`]), and
    /// forgets record ids too old to matter.
    pub fn take_delta(&mut self) -> StateDelta {
        self.metrics
            .publish_dead_letter_share(self.recent.snapshot());
        self.let_durable_bins_go();
        let outbox = std::mem::take(&mut self.outbox);
        let mut delta = StateDelta::default();
        outbox::take_vehicles(
            outbox.dirty_vehicles,
            &self.vehicles,
            &mut self.partitions,
            (self.commits, &self.closed_at_last_commit),
            &mut delta,
        );
        for p in outbox.moved_partitions {
            let state = self.partitions.get_mut(&p).expect("moved partitions exist");
            let retire = outbox::take_partition(p, state, &self.time, &self.retention, &mut delta);
            if let Some(horizon) = retire {
                self.retire_bins(p, horizon, &mut delta);
            }
        }
        outbox::take_fleet(
            outbox.dirty_fleet,
            &self.partitions,
            &self.fleet_view,
            &mut delta,
        );
        outbox::take_series(outbox.dirty_series, &self.vehicles, &mut delta);
        outbox::take_cohorts(
            outbox.dirty_cohorts,
            outbox.dirty_aggregators,
            &self.cohorts.aggregators,
            &self.cohort_view,
            &mut delta,
        );
        delta.cohort_reports = outbox.reports;
        delta.alerts = outbox.published;
        let mut gone = Vec::new();
        if let (Some(silent), true) = (self.retention.silent_ms, self.departed.may_depart()) {
            let partitions: Vec<PartitionId> =
                delta.positions.iter().map(|p| p.partition).collect();
            for p in partitions {
                gone.extend(self.let_silent_vehicles_go(p, silent));
            }
        }
        if self.publishes_view {
            delta.view =
                self.view_items(&delta, &gone, outbox.view_everything, outbox.view_vehicles);
        }
        for position in &delta.positions {
            self.closed_at_last_commit
                .insert(position.partition, position.closed_through_ms);
        }
        self.commits += 1;
        delta
    }

    /// What the group view learns of the commit of `delta`: its changes, the vehicles that
    /// left memory (`gone`), and whole vehicles (`everything` held, or those `returned`).
    fn view_items(
        &self,
        delta: &StateDelta,
        gone: &[(String, Vec<i64>)],
        everything: bool,
        returned: BTreeSet<String>,
    ) -> Vec<view::ViewItem> {
        let departed_in = |p: PartitionId| self.departed.in_partition(p);
        let mut items = delta.view_items(gone, departed_in);
        if everything {
            for vehicle in self.vehicles.iter() {
                items.extend(view::items_of_vehicle(vehicle.key(), &vehicle));
            }
            for (&p, state) in &self.partitions {
                if p.is_source() {
                    items.push(view::ViewItem::Fleet {
                        partition: p,
                        sums: state.fleet_sums.clone(),
                    });
                }
                items.push(view::ViewItem::Partition(view::PartitionStamp {
                    partition: p,
                    next_offset: state.next_offset,
                    departed: departed_in(p),
                    ..Default::default()
                }));
            }
            for (&at, aggregator) in &self.cohorts.aggregators {
                for (key, series) in &aggregator.series {
                    let mut encoded = Vec::new();
                    encode_series(series, &mut encoded);
                    items.push(view::ViewItem::Cohort {
                        key: key.clone(),
                        aggregator: at,
                        encoded,
                    });
                }
            }
        } else {
            for id in returned {
                if let Some(vehicle) = self.vehicles.get(&id) {
                    items.extend(view::items_of_vehicle(&id, &vehicle));
                }
            }
        }
        items
    }
}

/// What one series fed weighs in a commit, in records ([`Engine::pending_weight`]).
pub const SERIES_WEIGHT: usize = 16;

/// Every vehicle's bins summed: the fleet's totals (exact, integer sums in any order).
pub fn fleet_totals(vehicles: &Vehicles) -> BinStats {
    let mut total = BinStats::default();
    for vehicle in vehicles.iter() {
        total.add(&vehicle.totals());
    }
    total
}

#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod view_tests;
