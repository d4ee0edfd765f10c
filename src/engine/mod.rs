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
//! Each source partition's state and records are its [`task::PartitionTask`]'s; the engine hands
//! a batch of records to the tasks, which run side by side on `stream.threads` worker threads,
//! then takes what they raised (alerts, cohort reports) in the batch's record order and routes the
//! cohort reports to the aggregators (docs/design.md §8). A commit gathers every task's changes
//! into one [`StateDelta`].
//! [`crate::stream`] drives it from a source to a commit target.

pub mod admission;
pub mod bin_map;
pub mod clocks;
pub mod cohort_router;
pub mod cohorts;
pub mod delta;
pub mod departures;
pub mod detection;
pub mod held;
pub mod ledger;
pub mod members;
pub mod outbox;
pub mod restored;
pub mod retention;
pub mod reviews;
pub mod series;
pub mod state;
pub mod task;
pub mod view;
pub mod workers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::config::{DetectorConfig, StreamConfig};
use crate::dead_letter::RecentOutcomes;
pub use crate::dead_letter::Rejection;
use crate::metrics::Metrics;
use crate::model::{HazardClass, RecordKind, RegressionAlert, ReviewRequest};
pub use crate::partition_id::{PartitionId, StoredPartition};
use crate::sampling::SamplingPolicy;
pub use admission::SourceRecord;
use admission::TimeRules;
pub use bin_map::BinMap;
use cohort_router::{CohortRouter, RouteEffects, SourceProgress, SourcesRead};
use cohorts::{CohortAggregator, PartitionReport};
pub use delta::StateDelta;
use detection::{
    DetectionSettings, FleetSums, VehicleSet, decode_series, encode_series, is_current_series,
};
pub use held::HeldFleet;
use outbox::Outbox;
pub use outbox::{CohortView, FleetView, PartitionView};
pub use restored::{RestoreError, RestoredState};
pub use retention::{Retention, VehicleArchive};
use reviews::ReviewDesk;
pub use state::{
    BinStats, FactSegment, FnvHashBuilder, IdHashBuilder, PartitionPosition, PartitionState,
    PendingReview, Prior, RETIRED_BIN, RecentRecord, SeenSegment, VehicleMeta, VehicleState,
    Vehicles, fact_records, id_hash,
};
use task::{PartitionTask, Settings, TaskContext};
use workers::Workers;
pub use workers::{OneThread, RunGroups};

/// Where priors from refits scheduled elsewhere arrive (the edge's: a channel from the refit
/// thread, [`crate::stream::runner`]); the engine takes what arrived between polls.
pub trait PriorsInbox: Send {
    /// Every refit's priors that arrived since the last call, oldest first.
    fn take_arrived(&mut self) -> Vec<Vec<(String, Prior)>>;
}

impl VehicleSet for Vehicles {
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BinMap)) {
        for vehicle in self.iter() {
            f(&vehicle.meta, &vehicle.bins);
        }
    }
}

/// The vehicles of one source partition, found by a scan of every vehicle: what the tests
/// compare a task's index with.
#[cfg(test)]
pub struct PartitionVehicles<'a>(pub &'a Vehicles, pub PartitionId);

#[cfg(test)]
impl VehicleSet for PartitionVehicles<'_> {
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BinMap)) {
        for vehicle in self.0.iter().filter(|v| v.partition == self.1) {
            f(&vehicle.meta, &vehicle.bins);
        }
    }
}

/// What became of a batch ([`Engine::process_batch`]).
#[derive(Debug)]
pub struct Processed {
    /// Each record processed, by its index in the batch, in the batch's order.
    pub outcomes: Vec<(usize, Outcome)>,
    /// The records not processed (their partition waits to close bins until the next commit),
    /// in the batch's order: to be handed over again, first, with the next batch.
    pub deferred: Vec<usize>,
    /// Alerts raised by closes that no record of the batch made due (raised last).
    pub unattributed_alerts: usize,
}

/// What became of one record of a batch ([`Engine::process_batch`]).
#[derive(Debug)]
pub struct Outcome {
    /// `Err`: the record changed no state (apart from its partition's offset) and belongs in
    /// the dead-letter topic.
    pub result: Result<RecordKind, Rejection>,
    /// Alerts the record raised (the last of [`Engine::raised_alerts`]).
    pub alerts: usize,
}

/// What a source record of a batch came to in its task: the result, its partition, and how
/// many alerts and cohort reports it raised.
type Raised = (Result<RecordKind, Rejection>, PartitionId, usize, usize);

/// The coordinator of the partition tasks ([`task`]), the cohort aggregators ([`CohortRouter`]),
/// the priors and the commit: what is not one partition's.
pub struct Engine {
    settings: Settings,
    /// The number of the next commit ([`Engine::take_delta`]), from 1.
    commits: u64,
    /// The source partitions' tasks.
    tasks: BTreeMap<PartitionId, PartitionTask>,
    /// The cohort aggregator partitions' positions (the repartition topic's).
    cohort_positions: HashMap<PartitionId, PartitionState>,
    /// Every task's vehicles, for the pages.
    held: HeldFleet,
    /// Where cohort reports go, and the cohort aggregators held here.
    cohorts: CohortRouter,
    cohort_view: Arc<CohortView>,
    fleet_view: Arc<FleetView>,
    /// Alerts raised since the last were taken, oldest first.
    alerts: Vec<RegressionAlert>,
    /// Per-vehicle priors from the last refit that converged.
    priors: HashMap<String, Prior>,
    /// Where a scheduled refit sends new priors (already durable in the store).
    refits: Option<Box<dyn PriorsInbox>>,
    /// What the next commit writes and sends of the engine's own: the aggregators' changes,
    /// reports to send and alerts published.
    outbox: Outbox,
    /// The outcomes of the last records, for the dead-letter share `/health` reports.
    recent: RecentOutcomes,
    /// Where the tasks of a batch run.
    workers: Workers,
    pub(crate) metrics: Metrics,
}

/// The task of partition `p`, made if new (and its vehicles readable through `held`).
fn task_of<'a>(
    tasks: &'a mut BTreeMap<PartitionId, PartitionTask>,
    p: PartitionId,
    settings: &Settings,
    held: &HeldFleet,
    fleet_view: &Arc<FleetView>,
) -> &'a mut PartitionTask {
    tasks.entry(p).or_insert_with(|| {
        let task = PartitionTask::new(p, settings.archive.as_ref(), Arc::clone(fleet_view));
        held.add(p, Arc::clone(&task.vehicles));
        task
    })
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
            settings: Settings {
                config,
                time,
                retention: Retention::KEEP_ALL,
                detection,
                reviews: ReviewDesk::default(),
                publishes_view: false,
                archive: None,
            },
            commits: 1,
            tasks: BTreeMap::new(),
            cohort_positions: HashMap::new(),
            held: HeldFleet::default(),
            recent,
            cohorts: CohortRouter::default(),
            cohort_view: Arc::new(CohortView::default()),
            fleet_view: Arc::new(FleetView::default()),
            alerts: Vec::new(),
            priors: HashMap::new(),
            refits: None,
            outbox: Outbox::default(),
            workers: Workers::new(None),
            metrics,
        };
        engine.adopt(restored)?;
        Ok(engine)
    }

    /// Runs the tasks of a batch through `groups` (the edge's threads; until chosen, on the
    /// caller's thread, and [`crate::stream::runner::run`] chooses `stream.threads`).
    pub fn with_task_threads(mut self, groups: Box<dyn RunGroups>) -> Engine {
        self.set_task_threads(groups);
        self
    }

    pub fn set_task_threads(&mut self, groups: Box<dyn RunGroups>) {
        self.workers = Workers::new(Some(groups));
    }

    /// Whether [`Engine::set_task_threads`] chose where the tasks run.
    pub fn task_threads_chosen(&self) -> bool {
        self.workers.chosen()
    }

    /// The threads the tasks of a batch run on.
    pub fn threads(&self) -> usize {
        self.workers.threads()
    }

    /// The stream settings the engine was made with.
    pub fn stream_config(&self) -> &StreamConfig {
        &self.settings.config
    }

    /// The most partition tasks that ever ran at the same time.
    pub fn most_tasks_at_once(&self) -> usize {
        self.workers.most_at_once()
    }

    fn task(&mut self, p: PartitionId) -> &mut PartitionTask {
        task_of(
            &mut self.tasks,
            p,
            &self.settings,
            &self.held,
            &self.fleet_view,
        )
    }

    /// Takes over restored state (at start-up, or partitions this process was just given): its
    /// vehicles, partitions, series and cohort aggregators join what the engine holds.
    pub fn adopt(&mut self, restored: RestoredState) -> Result<(), RestoreError> {
        self.use_priors(restored.priors);
        let mut adopted = BTreeSet::new();
        let (commit, width) = (self.commits, self.settings.time.bin_width_ms);
        for (id, state) in restored.vehicles {
            adopted.insert(state.partition);
            self.task(state.partition)
                .adopt_vehicle(id, state, commit, width);
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
            let params = self.settings.detection.params;
            let series = decode_series(params, &bytes).map_err(|source| RestoreError {
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
            } else if let Some(task) = self.tasks.get(&partition)
                && let Some(mut vehicle) = task.vehicles.get_mut(&key)
            {
                vehicle.series = Some(Box::new(series));
            }
        }
        let mut fleet_sums = restored.fleet_sums;
        for (partition, mut state) in restored.partitions {
            adopted.insert(partition);
            if !partition.is_source() {
                self.cohort_positions.insert(partition, state);
                continue;
            }
            let detection = &self.settings.detection;
            let task = task_of(
                &mut self.tasks,
                partition,
                &self.settings,
                &self.held,
                &self.fleet_view,
            );
            // The fleet the partition's vehicles are compared with: its closed bins.
            state.fleet_sums = match fleet_sums.remove(&partition) {
                Some(sums) => sums,
                None => {
                    // A store from before fleet sums were kept: sum the bins (all still there)
                    // and keep the sums with the next commit, before any bin retires.
                    if state.closed_through_ms != i64::MIN {
                        task.outbox.dirty_fleet.insert(partition);
                    }
                    FleetSums::of(detection, &*task, state.closed_through_ms)
                }
            };
            task.adopt_state(state, commit);
        }
        for p in adopted {
            if let Some(task) = self.tasks.get_mut(&p) {
                task.rebuild_from_vehicles(&self.settings.time);
            }
        }
        self.refresh_cohort_view();
        self.refresh_fleet_view();
        self.refresh_gauges();
        Ok(())
    }

    /// Lets go of partitions (given to another process): their tasks, positions and cohort
    /// aggregators leave the engine. What was not committed is dropped; the next owner redoes
    /// it from the committed state.
    pub fn release(&mut self, partitions: &[PartitionId]) {
        let gone = |p: &PartitionId| partitions.contains(p);
        for p in partitions {
            if self.tasks.remove(p).is_some() {
                self.held.remove(*p);
            }
        }
        self.cohort_positions.retain(|p, _| !gone(p));
        self.cohorts.release(gone);
        self.outbox.release(gone);
        self.refresh_cohort_view();
        self.refresh_fleet_view();
        self.refresh_gauges();
    }

    /// Every partition number the engine holds state for: source partitions (their tasks) and
    /// cohort aggregators.
    pub fn held_partitions(&self) -> Vec<PartitionId> {
        let mut held: BTreeSet<PartitionId> = self.tasks.keys().copied().collect();
        held.extend(self.cohort_positions.keys().copied());
        held.extend(
            self.cohorts
                .aggregators
                .keys()
                .map(|&q| PartitionId::Cohort(q)),
        );
        held.into_iter().collect()
    }

    /// Keeps state only as far back in event time as `retention` says.
    pub fn with_retention(mut self, retention: Retention) -> Engine {
        self.settings.retention = retention;
        self.settings.detection.pause_after_ms = retention.silent_ms;
        self
    }

    /// Lets silent vehicles ([`Retention::silent_ms`]) leave memory: `archive` (the state
    /// store) gives them back when they send again.
    pub fn with_archive(mut self, archive: Arc<dyn VehicleArchive>) -> Engine {
        for task in self.tasks.values_mut() {
            task.set_archive(Arc::clone(&archive));
        }
        self.settings.archive = Some(archive);
        self
    }

    /// Vehicles that have left memory, silent, and are in the store.
    pub fn departed_vehicles(&self) -> usize {
        self.tasks.values().map(|t| t.departed.count()).sum()
    }

    /// Sets the gauges that follow from the state held (after a restore or a release).
    fn refresh_gauges(&self) {
        let metrics = &self.metrics;
        metrics.vehicles.set(self.held.len() as i64);
        let (mut open, mut pending_reviews) = (0, 0);
        for task in self.tasks.values() {
            let (task_open, task_pending) = task.open_episodes_and_reviews();
            open += task_open;
            pending_reviews += task_pending;
        }
        open += self
            .cohorts
            .aggregators
            .values()
            .flat_map(|a| a.series.values().flat_map(|s| s.values()))
            .filter(|s| s.episode.open.is_some())
            .count();
        metrics.open_episodes.set(open as i64);
        metrics.reviews_pending.set(pending_reviews as i64);
    }

    /// Rebuilds the API's view of the partitions' fleet sums from the tasks.
    fn refresh_fleet_view(&self) {
        let mut view = self
            .fleet_view
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        view.clear();
        for (&p, task) in &self.tasks {
            let fleet = task.state.fleet_sums.clone();
            let departed = task.departed.count();
            view.insert(p, PartitionView { fleet, departed });
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
        self.settings.detection.reviewed = true;
        self.settings.detection.sampling_policy = policy.policy.name();
        self.settings.reviews.use_policy(policy);
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
        self.settings.reviews.use_service(timeout_ms);
        self
    }

    /// Review requests made since the last call, each partition's oldest first: to be
    /// published before the next commit (which records them as pending).
    pub fn take_review_requests(&mut self) -> Vec<ReviewRequest> {
        self.tasks
            .values_mut()
            .flat_map(|task| std::mem::take(&mut task.review_requests))
            .collect()
    }

    /// How far each source partition held has read, for the cohort bins' waiting rules.
    fn sources_read(&self) -> SourcesRead {
        self.tasks
            .iter()
            .filter_map(|(p, task)| {
                let progress = SourceProgress {
                    accepted: !task.state.clocks.is_empty(),
                    next_offset: task.state.next_offset,
                };
                Some((p.source()?, progress))
            })
            .collect()
    }

    /// Tells the engine which source partitions it reads (their numbers, with end offsets where
    /// known). With the repartition topic, a partition known to be empty (no record, at its
    /// end) is reported so, so that cohort bins do not wait for it.
    pub fn set_input_partitions(&mut self, inputs: &[(i32, Option<i64>)]) {
        let sources = self.sources_read();
        self.cohorts.set_inputs(inputs, &sources, &mut self.outbox);
    }

    /// Hands a cohort report to the router: to the aggregator in process (which may raise
    /// alerts) or to the repartition topic with the next commit.
    fn route(&mut self, report: PartitionReport, aggregate_at: Option<i32>) {
        let sources = self.sources_read();
        let effects = RouteEffects {
            detection: &self.settings.detection,
            partitions: &sources,
            outbox: &mut self.outbox,
            alerts: &mut self.alerts,
            metrics: &self.metrics,
        };
        match aggregate_at {
            Some(aggregator) => self.cohorts.aggregate(aggregator, report, effects),
            None => self.cohorts.route(report, effects),
        }
    }

    /// A record of the repartition topic: a source partition's cohort report.
    fn process_report(
        &mut self,
        record: &SourceRecord<'_>,
        aggregator: i32,
    ) -> Result<RecordKind, Rejection> {
        let result = match serde_json::from_slice::<PartitionReport>(record.payload) {
            Ok(report) => {
                self.route(report, Some(aggregator));
                Ok(RecordKind::CohortReport)
            }
            Err(e) => Err(Rejection::CohortReport(e.to_string())),
        };
        // (Reports make no facts: nothing for a ledger to skip.)
        let partition = self.cohort_positions.entry(record.partition).or_default();
        partition.next_offset = record.offset + 1;
        if partition.interval_first_offset.is_none() {
            partition.interval_first_offset = Some(record.offset);
            self.outbox.moved_partitions.push(record.partition);
        }
        self.outbox.records += 1;
        result
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
            self.settings
                .detection
                .use_fleet_shape(HazardClass::Critical, shape);
        }
    }

    /// Takes priors from refits scheduled elsewhere (see [`Engine::apply_received_priors`]).
    pub fn receive_priors(&mut self, refits: Box<dyn PriorsInbox>) {
        self.refits = Some(refits);
    }

    /// Applies priors that arrived since the last call; the run loop calls it between polls.
    pub fn apply_received_priors(&mut self) {
        let received = match &mut self.refits {
            Some(refits) => refits.take_arrived(),
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
        &self.settings.detection
    }

    /// Read access to the vehicles held, for the HTTP API.
    pub fn vehicles(&self) -> HeldFleet {
        self.held.clone()
    }

    /// Each source partition's position, watermark and closed bins, by its task.
    pub fn source_states(&self) -> impl Iterator<Item = (PartitionId, &PartitionState)> {
        self.tasks.iter().map(|(p, task)| (*p, &task.state))
    }

    /// A source partition's position, watermark and closed bins (default if not held).
    #[cfg(test)]
    fn partition_state(&self, p: PartitionId) -> PartitionState {
        self.tasks
            .get(&p)
            .map(|t| t.state.clone())
            .unwrap_or_default()
    }

    /// Next offset to read per partition, as of the records processed so far.
    pub fn positions(&self) -> HashMap<PartitionId, i64> {
        let tasks = self.tasks.iter().map(|(p, t)| (*p, t.state.next_offset));
        let cohorts = self
            .cohort_positions
            .iter()
            .map(|(p, s)| (*p, s.next_offset));
        tasks.chain(cohorts).collect()
    }

    /// Records processed since the last commit point.
    pub fn pending_records(&self) -> usize {
        self.outbox.records
            + self
                .tasks
                .values()
                .map(|t| t.pending_records())
                .sum::<usize>()
    }

    /// How large the next commit is, in records' worth: the records processed since the
    /// last, and each series fed since as [`SERIES_WEIGHT`] records (a bin close feeds every
    /// series of its partition at once, ~1-2 KB each, where a record adds ~100 bytes). A commit
    /// is due at `state.commit_max_records` of it, which bounds what a commit holds.
    pub fn pending_weight(&self) -> usize {
        self.pending_records() + self.pending_series_weight()
    }

    /// The part of [`Engine::pending_weight`] that the series fed since the last commit make.
    pub fn pending_series_weight(&self) -> usize {
        self.tasks
            .values()
            .map(|t| t.pending_series())
            .sum::<usize>()
            * SERIES_WEIGHT
    }

    /// Whether the next commit point has anything to commit: records processed, or cohort
    /// reports to send (an idle partition announcing itself empty).
    pub fn has_pending_changes(&self) -> bool {
        self.outbox.has_changes() || self.tasks.values().any(|t| t.outbox.has_changes())
    }

    /// Commits carry what the group view learns of them ([`StateDelta::view`]).
    pub fn with_group_view(mut self) -> Engine {
        self.settings.publishes_view = true;
        self
    }

    /// The next commit gives the group view everything held (the partitions just assigned),
    /// whatever it had of them before.
    pub fn republish_view(&mut self) {
        self.outbox.view_everything = self.settings.publishes_view;
    }

    /// Processes one record. `Err` means the record did not change state (apart from the
    /// partition's offset) and belongs in the dead-letter topic.
    pub fn process(&mut self, record: &SourceRecord<'_>) -> Result<RecordKind, Rejection> {
        let processed = self.process_batch(std::slice::from_ref(record), usize::MAX);
        let (_, outcome) = processed.outcomes.into_iter().next().expect("one record");
        outcome.result
    }

    /// Processes a batch of records: each source partition's by its task, the tasks side by
    /// side on the engine's threads; then, in the batch's order, each record's alerts and
    /// cohort reports (routed to the aggregators, whose records are processed in that order
    /// too). The result does not depend on the number of threads.
    ///
    /// A task stops at a record that makes a bin close due. The tasks stopped close their bins
    /// (side by side), except that of those whose close alone weighs half of `commit_weight` (a
    /// commit's [`Engine::pending_weight`], if at least [`MIN_WAITING_COMMIT`]) only the first, in the order of the records that
    /// made them due, closes; the others wait, their records left for the next batch
    /// ([`Processed::deferred`]), and so do the rest of the batch's records once a large close
    /// is done (the commit comes first). So a commit holds one large partition's day close, not
    /// every partition's at once.
    pub fn process_batch(
        &mut self,
        records: &[SourceRecord<'_>],
        commit_weight: usize,
    ) -> Processed {
        let mut left: BTreeMap<PartitionId, Vec<usize>> = BTreeMap::new();
        for (i, record) in records.iter().enumerate() {
            if record.partition.is_source() {
                left.entry(record.partition).or_default().push(i);
            }
        }
        for &p in left.keys() {
            self.task(p);
        }
        for (&p, task) in &self.tasks {
            if task.close_pending() {
                left.entry(p).or_default();
            }
        }
        let mut steps: HashMap<PartitionId, Vec<workers::TaskStep>> = HashMap::new();
        let mut deferred = Vec::new();
        while !left.is_empty() {
            let ctx = TaskContext {
                settings: &self.settings,
                metrics: &self.metrics,
                commit: self.commits,
            };
            let jobs: Vec<workers::Job<'_>> = self
                .tasks
                .iter_mut()
                .filter_map(|(p, task)| Some((task, left.remove(p)?)))
                .collect();
            // Those that stopped with a close due, by the record that made it due.
            let mut stopped = Vec::new();
            for run in self.workers.run(jobs, records, ctx) {
                let made_due = run.steps.last().map_or(0, |(i, ..)| i + 1);
                steps.entry(run.partition).or_default().extend(run.steps);
                if self.tasks[&run.partition].close_pending() {
                    stopped.push((made_due, run.partition));
                    left.insert(run.partition, run.rest);
                }
            }
            if stopped.is_empty() {
                break;
            }
            stopped.sort_unstable();
            // A close that alone weighs half a commit is large: one at a time (with the small
            // ones), and the commit comes before the next.
            let large =
                |weight: usize| commit_weight >= MIN_WAITING_COMMIT && weight >= commit_weight / 2;
            let (mut closing, mut large_closing) = (BTreeSet::new(), false);
            for (_, p) in stopped {
                let close = self.tasks[&p].close_weight();
                if !large(close) || !large_closing {
                    large_closing |= large(close);
                    closing.insert(p);
                } else if let Some(rest) = left.remove(&p) {
                    deferred.extend(rest);
                }
            }
            let ctx = TaskContext {
                settings: &self.settings,
                metrics: &self.metrics,
                commit: self.commits,
            };
            let tasks: Vec<&mut PartitionTask> = self
                .tasks
                .iter_mut()
                .filter_map(|(p, task)| closing.contains(p).then_some(task))
                .collect();
            self.workers.close(tasks, ctx);
            // A close's alerts and reports are the record's that made it due.
            for p in &closing {
                let task = &self.tasks[p];
                if let Some(last) = steps.get_mut(p).and_then(|s| s.last_mut()) {
                    (last.2, last.3) = (task.alerts.len(), task.reports.len());
                }
            }
            if large_closing {
                deferred.extend(std::mem::take(&mut left).into_values().flatten());
            }
            left.retain(|_, rest| !rest.is_empty());
        }
        deferred.sort_unstable();
        self.metrics.records_deferred.inc_by(deferred.len() as u64);
        self.take_outcomes(records, steps, deferred)
    }

    /// The outcomes of a batch's records, in its order: each source record's from its task's
    /// steps, with its alerts and cohort reports (routed now); each cohort report record
    /// processed now. Alerts and reports of closes no record of the batch made due follow.
    fn take_outcomes(
        &mut self,
        records: &[SourceRecord<'_>],
        steps: HashMap<PartitionId, Vec<workers::TaskStep>>,
        deferred: Vec<usize>,
    ) -> Processed {
        let mut raised: Vec<Option<Raised>> = (0..records.len()).map(|_| None).collect();
        for (p, task_steps) in steps {
            let (mut alerts_before, mut reports_before) = (0, 0);
            for (i, result, alerts, reports) in task_steps {
                raised[i] = Some((result, p, alerts - alerts_before, reports - reports_before));
                (alerts_before, reports_before) = (alerts, reports);
            }
        }
        let mut task_alerts: BTreeMap<PartitionId, std::vec::IntoIter<RegressionAlert>> =
            BTreeMap::new();
        let mut task_reports: BTreeMap<PartitionId, std::vec::IntoIter<PartitionReport>> =
            BTreeMap::new();
        for (&p, task) in self.tasks.iter_mut() {
            task_alerts.insert(p, std::mem::take(&mut task.alerts).into_iter());
            task_reports.insert(p, std::mem::take(&mut task.reports).into_iter());
        }
        let mut outcomes = Vec::with_capacity(records.len() - deferred.len());
        for (i, (record, raised)) in records.iter().zip(raised).enumerate() {
            let before = self.alerts.len();
            let result = match (record.partition, raised) {
                (PartitionId::Cohort(aggregator), _) => self.process_report(record, aggregator),
                (_, Some((result, p, alerts, reports))) => {
                    let source_alerts = task_alerts.get_mut(&p).expect("a task ran");
                    self.alerts.extend(source_alerts.by_ref().take(alerts));
                    let source_reports = task_reports.get_mut(&p).expect("a task ran");
                    let reports: Vec<PartitionReport> =
                        source_reports.by_ref().take(reports).collect();
                    for report in reports {
                        self.route(report, None);
                    }
                    self.count_outcome(record, &result);
                    result
                }
                // Deferred: the next batch has it.
                (PartitionId::Source(_), None) => continue,
            };
            let alerts = self.alerts.len() - before;
            outcomes.push((i, Outcome { result, alerts }));
        }
        let before = self.alerts.len();
        for (_, alerts) in task_alerts {
            self.alerts.extend(alerts);
        }
        let unattributed = self.alerts.len() - before;
        for (_, reports) in task_reports {
            for report in reports {
                self.route(report, None);
            }
        }
        Processed {
            outcomes,
            deferred,
            unattributed_alerts: unattributed,
        }
    }

    /// A source record's outcome in the metrics and the dead-letter share.
    fn count_outcome(&mut self, record: &SourceRecord<'_>, result: &Result<RecordKind, Rejection>) {
        self.metrics.records_received.inc();
        match result {
            Ok(kind) => self.metrics.records_accepted(*kind).inc(),
            Err(rejection) => self.metrics.dlq_records(rejection.reason()).inc(),
        }
        if let Some(source) = record.partition.source() {
            self.recent
                .push(source, result.as_ref().err().map(Rejection::reason));
        }
    }

    /// Takes everything changed since the last call (the next commit's [`StateDelta`]): each
    /// task's share, then the aggregators', the reports to send and the alerts published.
    pub fn take_delta(&mut self) -> StateDelta {
        self.metrics
            .publish_dead_letter_share(self.recent.snapshot());
        let mut delta = StateDelta::default();
        let (mut gone, mut returned) = (Vec::new(), BTreeSet::new());
        let ctx = TaskContext {
            settings: &self.settings,
            metrics: &self.metrics,
            commit: self.commits,
        };
        for task in self.tasks.values_mut() {
            task.take_delta(ctx, &mut delta, &mut gone, &mut returned);
        }
        let outbox = std::mem::take(&mut self.outbox);
        for p in outbox.moved_partitions {
            let state = self
                .cohort_positions
                .get_mut(&p)
                .expect("moved partitions exist");
            // (An aggregator partition keeps no vehicle bins to retire.)
            let (time, retention) = (&self.settings.time, &self.settings.retention);
            outbox::take_partition(p, state, time, retention, &mut delta);
        }
        outbox::take_cohorts(
            outbox.dirty_cohorts,
            outbox.dirty_aggregators,
            &self.cohorts.aggregators,
            &self.cohort_view,
            &mut delta,
        );
        delta.cohort_reports = outbox.reports;
        delta.alerts = outbox.published;
        if self.settings.publishes_view {
            delta.view = self.view_items(&delta, &gone, outbox.view_everything, returned);
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
        let departed_in = |p: PartitionId| self.tasks.get(&p).map_or(0, |t| t.departed.count());
        let mut items = delta.view_items(gone, departed_in);
        if everything {
            self.held
                .for_each(|id, vehicle| items.extend(view::items_of_vehicle(id, vehicle)));
            let stamp = |p: PartitionId, next_offset: i64| {
                view::ViewItem::Partition(view::PartitionStamp {
                    partition: p,
                    next_offset,
                    departed: departed_in(p),
                    ..Default::default()
                })
            };
            for (&p, task) in &self.tasks {
                items.push(view::ViewItem::Fleet {
                    partition: p,
                    sums: task.state.fleet_sums.clone(),
                });
                items.push(stamp(p, task.state.next_offset));
            }
            for (&p, state) in &self.cohort_positions {
                items.push(stamp(p, state.next_offset));
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
                if let Some(vehicle) = self.held.get(&id) {
                    items.extend(view::items_of_vehicle(&id, &vehicle));
                }
            }
        }
        items
    }
}

/// Commits smaller than this (in records' worth) hold no close back: they are small whatever
/// closes ([`Engine::process_batch`]).
pub const MIN_WAITING_COMMIT: usize = 10_000;

/// What one series fed weighs in a commit, in records ([`Engine::pending_weight`]).
pub const SERIES_WEIGHT: usize = 16;

/// Every vehicle's bins summed: the fleet's totals (exact, integer sums in any order).
pub fn fleet_totals(vehicles: &HeldFleet) -> BinStats {
    let mut total = BinStats::default();
    vehicles.for_each(|_, vehicle| total.add(&vehicle.totals()));
    total
}

#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod view_tests;
