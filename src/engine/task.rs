//! A partition task: the unit of state, of parallelism and of migration (docs/design.md §8).
//!
//! A task owns everything one source partition's records change: its vehicles (their bins,
//! series and attributes), the index of them by last bin ([`Members`]), its position, watermark,
//! seen ids and fleet sums ([`PartitionState`]), the vehicles of it out of memory
//! ([`Departures`]), and what its next commit writes ([`Outbox`]). It reads the rules every task
//! shares ([`Settings`]) and touches nothing of another task's, so tasks run on worker threads
//! side by side. What leaves it for the rest of the engine (alerts, cohort reports, review
//! requests) is kept as values for the engine to take in record order; its changes leave as its
//! share of the commit's [`StateDelta`]. A vehicle's state is the task's of the partition its
//! records arrive on: nothing moves between tasks in memory. Pure: no IO, threads or clocks of
//! its own (the archive that brings a vehicle back is the store, at the edge).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::admission::{self, SourceRecord, TimeRules};
use super::cohorts::PartitionReport;
use super::delta::StateDelta;
use super::departures::Departures;
use super::detection::{self, DetectionSettings, VehicleSet};
use super::members::{Members, last_bin};
use super::outbox::{self, FleetView, Outbox};
use super::retention::{self, Retention, VehicleArchive};
use super::reviews::ReviewDesk;
use super::state::{BinStats, PartitionState, RETIRED_BIN, VehicleMeta, VehicleState, Vehicles};
use super::{BinMap, Rejection};
use crate::config::StreamConfig;
use crate::metrics::Metrics;
use crate::model::{HazardClass, KeyKind, Payload, RecordKind, RegressionAlert, ReviewRequest};
use crate::model::{ReviewResult, TelemetryEvent};
use crate::partition_id::PartitionId;

/// What every task reads and none changes while records are processed: the rules of time,
/// retention and detection, the review policy, and where vehicles out of memory come back from.
pub struct Settings {
    pub config: StreamConfig,
    pub time: TimeRules,
    pub retention: Retention,
    pub detection: DetectionSettings,
    pub reviews: ReviewDesk,
    /// Commits carry what the group view learns of them.
    pub publishes_view: bool,
    /// The state store, which gives back what left memory; without one nothing leaves.
    pub archive: Option<Arc<dyn VehicleArchive>>,
}

impl Settings {
    /// Whether closed bins leave memory for the store (docs/design.md §7): where there is a
    /// store to read them back from, and no group view, whose first publication of a vehicle
    /// carries all its bins.
    pub fn keeps_history_in_store(&self) -> bool {
        self.archive.is_some() && !self.publishes_view
    }
}

/// What a task reads besides its own state while it works: the shared rules, the metrics, and
/// the number of the commit being prepared.
#[derive(Clone, Copy)]
pub struct TaskContext<'a> {
    pub settings: &'a Settings,
    pub metrics: &'a Metrics,
    pub commit: u64,
}

/// One source partition's state and pending changes.
pub struct PartitionTask {
    partition: PartitionId,
    /// The partition's vehicles in memory (shared for reading with the pages).
    pub(super) vehicles: Arc<Vehicles>,
    /// The partition's vehicles by last bin.
    members: Members,
    pub(super) state: PartitionState,
    /// The partition's vehicles that left memory (silent), stored under it.
    pub(super) departed: Departures,
    /// What the next commit writes.
    pub(super) outbox: Outbox,
    /// Alerts raised and not yet taken by the engine, oldest first.
    pub(super) alerts: Vec<RegressionAlert>,
    /// Cohort reports of bins closed, not yet taken by the engine.
    pub(super) reports: Vec<PartitionReport>,
    /// Review requests made and not yet taken, oldest first.
    pub(super) review_requests: Vec<ReviewRequest>,
    /// The partition's fleet sums and departed count as the pages see them.
    fleet_view: Arc<FleetView>,
    /// The record just processed let the partition close a bin still open.
    close_due: bool,
    /// Bins closed (commit number then, closed through): once that commit's changes are
    /// durable, the vehicles' bins before it may leave memory for the store.
    closings: VecDeque<(u64, i64)>,
    /// Closed-through as of the last commit: a bin before it written again (a review's answer)
    /// is a rewrite, which its vehicle must wait out.
    closed_at_last_commit: i64,
}

impl VehicleSet for PartitionTask {
    fn for_each(&self, f: &mut dyn FnMut(&VehicleMeta, &BinMap)) {
        for id in self.members.of(self.partition) {
            if let Some(vehicle) = self.vehicles.get(id) {
                f(&vehicle.meta, &vehicle.bins);
            }
        }
    }
}

impl PartitionTask {
    pub fn new(
        partition: PartitionId,
        archive: Option<&Arc<dyn VehicleArchive>>,
        fleet_view: Arc<FleetView>,
    ) -> PartitionTask {
        let mut departed = Departures::default();
        if let Some(archive) = archive {
            departed.set_archive(Arc::clone(archive));
        }
        PartitionTask {
            partition,
            vehicles: Arc::new(Vehicles::default()),
            members: Members::default(),
            state: PartitionState::default(),
            departed,
            outbox: Outbox::default(),
            alerts: Vec::new(),
            reports: Vec::new(),
            review_requests: Vec::new(),
            fleet_view,
            close_due: false,
            closings: VecDeque::new(),
            closed_at_last_commit: i64::MIN,
        }
    }

    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Lets vehicles leave memory for `archive` from now on.
    pub fn set_archive(&mut self, archive: Arc<dyn VehicleArchive>) {
        self.departed.set_archive(archive);
    }

    /// Takes over a restored vehicle (its state is in the store already: silent, it may leave
    /// memory at the next commit).
    pub fn adopt_vehicle(&mut self, id: String, mut state: VehicleState, commit: u64, width: i64) {
        state.quiet_since_commit = Some(commit - 1);
        state.partition = self.partition;
        if let Some(held) = self.vehicles.get(&id) {
            self.members
                .leave(self.partition, &id, last_bin(&held, width));
        }
        self.members
            .join(self.partition, &id, last_bin(&state, width));
        self.vehicles.insert(id, state);
    }

    /// Takes over the partition's restored position; what was restored is in the store, so its
    /// closed bins may leave memory at once.
    pub fn adopt_state(&mut self, state: PartitionState, commit: u64) {
        if state.closed_through_ms != i64::MIN {
            self.closings
                .push_back((commit.saturating_sub(2), state.closed_through_ms));
            self.closed_at_last_commit = state.closed_through_ms;
        }
        self.state = state;
    }

    /// Rebuilds what the partition derives from its vehicles after a restore: the vehicle
    /// clocks from their latest record times (the watermark they give never takes it back),
    /// and the review holds from their pending reviews.
    pub fn rebuild_from_vehicles(&mut self, time: &TimeRules) {
        let latest: Vec<(String, i64)> = self
            .members
            .of(self.partition)
            .filter_map(|id| {
                let vehicle = self.vehicles.get(id)?;
                Some((id.to_string(), vehicle.meta.last_event_time_ms))
            })
            .collect();
        self.state.clocks = admission::VehicleClocks::of(
            latest.iter().map(|(v, t)| (v.as_str(), *t)),
            time.watermark_quorum,
        );
        time.advance_watermark(&mut self.state);
        for vehicle in self.vehicles.iter() {
            for review in &vehicle.meta.pending_reviews {
                self.state
                    .review_holds
                    .insert(super::reviews::review_hold(vehicle.key(), review));
            }
        }
    }

    /// Processes one record of the partition. `Err` means the record did not change state
    /// (apart from the partition's offset) and belongs in the dead-letter topic. A bin close it
    /// makes due waits for [`PartitionTask::close`]: the task takes no record before it.
    pub fn process(
        &mut self,
        record: &SourceRecord<'_>,
        ctx: TaskContext<'_>,
    ) -> Result<RecordKind, Rejection> {
        let result = self.apply(record, ctx);
        self.advance_position(record, result.is_err());
        result
    }

    /// Whether the partition has bins to close before its next record.
    pub fn close_pending(&self) -> bool {
        self.close_due
    }

    /// What a bin close adds to the next commit: every vehicle's series, in records' worth.
    pub fn close_weight(&self) -> usize {
        self.vehicles.len() * super::SERIES_WEIGHT
    }

    /// Closes the bins due ([`PartitionTask::close_pending`]).
    pub fn close(&mut self, ctx: TaskContext<'_>) {
        if std::mem::take(&mut self.close_due) {
            self.close_bins(ctx);
        }
    }

    /// The partition has read `record`: its next offset moves past it; a rejected one is noted
    /// in its ledger (what a rebuild of the facts from the input must skip).
    fn advance_position(&mut self, record: &SourceRecord<'_>, rejected: bool) {
        let state = &mut self.state;
        state.next_offset = record.offset + 1;
        if rejected {
            state.pending_rejected.push(record.offset);
        }
        if state.interval_first_offset.is_none() {
            state.interval_first_offset = Some(record.offset);
            self.outbox.moved_partitions.push(self.partition);
        }
        self.outbox.records += 1;
    }

    fn apply(
        &mut self,
        record: &SourceRecord<'_>,
        ctx: TaskContext<'_>,
    ) -> Result<RecordKind, Rejection> {
        let settings = ctx.settings;
        let event = admission::read(record, settings.config.max_record_bytes, &settings.time)?;
        if let Payload::Review(result) = &event.payload {
            return self.apply_review(record, &event, result, ctx);
        }
        // Before any check that records the record: a failure leaves no trace of it, and the
        // vehicle stays out (in the store) for its next record.
        if let Some((_, vehicle)) = self
            .departed
            .bring_back(&event.vehicle_id, settings.detection.params)?
        {
            self.returned(&event.vehicle_id, vehicle, ctx);
        }
        let admitted = admission::admit(&settings.time, &mut self.state, &event)?;
        settings.reviews.give_up_late(
            &mut self.state,
            &self.vehicles,
            &mut self.outbox,
            ctx.metrics,
        );
        let time = &settings.time;
        if self
            .state
            .may_close(time.bin_width_ms, time.allowed_lateness_ms)
        {
            self.close_due = true;
        }
        self.count_in_vehicle(record, &event, admitted, ctx);
        Ok(event.kind())
    }

    /// An admitted record counts in its vehicle's bin (the vehicle is new to the partition, or
    /// held by it), its attributes and its review, and is kept as a fact.
    fn count_in_vehicle(
        &mut self,
        record: &SourceRecord<'_>,
        event: &TelemetryEvent<'_>,
        admitted: admission::Admitted,
        ctx: TaskContext<'_>,
    ) {
        let settings = ctx.settings;
        let admission::Admitted { time_ms: time, bin } = admitted;
        let counts = BinStats::of_payload(&event.payload);
        let vehicle_id: &str = &event.vehicle_id;
        let width = settings.time.bin_width_ms;
        let mut indexed = None;
        let mut vehicle = match self.vehicles.get_mut(vehicle_id) {
            Some(v) => {
                indexed = Some((self.partition, last_bin(&v, width)));
                v
            }
            None => {
                self.vehicles.insert(
                    vehicle_id.to_string(),
                    VehicleState {
                        partition: self.partition,
                        ..VehicleState::default()
                    },
                );
                ctx.metrics.vehicles.inc();
                self.vehicles.get_mut(vehicle_id).expect("just inserted")
            }
        };
        let vehicle = &mut *vehicle;
        if vehicle.add(bin, &counts) {
            self.outbox.vehicle_changed(vehicle_id);
        }
        // The clock the partition's watermark follows.
        vehicle.meta.last_event_time_ms = vehicle.meta.last_event_time_ms.max(time);
        vehicle.meta.note_record(&event.payload);
        if settings.publishes_view {
            vehicle.meta.note_recent_record(&event.payload, time);
        }
        let reviews = &settings.reviews;
        match &event.payload {
            Payload::Safety(e) if e.is_critical() => {
                reviews.note_critical_event(vehicle, &e.trip_id, bin);
            }
            Payload::Trip(t) if reviews.is_sampling() => {
                let changed = reviews.decide_trip(
                    &mut self.review_requests,
                    vehicle_id,
                    vehicle,
                    t,
                    counts.exposure_ms,
                    &mut self.state,
                    &settings.detection,
                    width,
                    ctx.metrics,
                );
                if changed {
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
            (self.partition, last_bin(vehicle, width)),
        );
    }

    /// A review service's answer: the trip's reviewed exposure and its critical events enter its
    /// vehicle's bins (held open for it), and the hold is released.
    fn apply_review(
        &mut self,
        record: &SourceRecord<'_>,
        event: &TelemetryEvent<'_>,
        result: &ReviewResult<'_>,
        ctx: TaskContext<'_>,
    ) -> Result<RecordKind, Rejection> {
        let time = &ctx.settings.time;
        let vehicle_id: &str = &event.vehicle_id;
        let mut vehicle =
            self.vehicles
                .get_mut(vehicle_id)
                .ok_or_else(|| Rejection::UnrequestedReview {
                    trip_id: result.trip_id.to_string(),
                })?;
        let vehicle = &mut *vehicle;
        let width = time.bin_width_ms;
        if ctx.settings.reviews.answer(
            vehicle_id,
            vehicle,
            result,
            &mut self.state,
            width,
            ctx.metrics,
        )? {
            self.outbox.vehicle_changed(vehicle_id);
        }
        if self.state.may_close(width, time.allowed_lateness_ms) {
            self.close_due = true;
        }
        // Kept under the bin of its record time, as every record is (what a rebuild of the
        // facts from the input finds again).
        let bin = TimeRules::record_time(event).div_euclid(width) * width;
        vehicle.keep_facts(bin, record.offset, record.payload, event);
        Ok(RecordKind::Review)
    }

    /// Closes the bins the partition's watermark has passed (plus lateness): its vehicles
    /// against the partition's fleet, then a cohort report for the engine to route.
    fn close_bins(&mut self, ctx: TaskContext<'_>) {
        let (settings, metrics) = (ctx.settings, ctx.metrics);
        let time = &settings.time;
        if self.state.watermark_ms == i64::MIN {
            return;
        }
        let through = self
            .state
            .closable_through(time.bin_width_ms, time.allowed_lateness_ms);
        if through <= self.state.closed_through_ms {
            return;
        }
        let from = self.state.closed_through_ms;
        self.state.closed_through_ms = through;
        let mut fleet = std::mem::take(&mut self.state.fleet_sums);
        let alerts_before = self.alerts.len();
        let p = self.partition;
        let first_bin = self
            .members
            .of(p)
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
            for id in self.members.of(p) {
                if let Some(stats) = self
                    .vehicles
                    .get(id)
                    .and_then(|v| v.bins.get(&bin).copied())
                {
                    totals.add(&stats);
                }
            }
            fleet.push(&settings.detection, totals);
            for id in self.members.of(p) {
                let Some(mut entry) = self.vehicles.get_mut(id) else {
                    continue;
                };
                let (id, vehicle) = entry.pair_mut();
                let (bins_fed, bin_changed) = detection::close_vehicle_bin(
                    &settings.detection,
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
            bin += time.bin_width_ms;
        }
        self.state.fleet_sums = fleet;
        self.outbox.dirty_fleet.insert(p);
        self.closings.push_back((ctx.commit, through));
        if fed > 0 {
            metrics
                .detector_updates(KeyKind::Vehicle)
                .inc_by(fed * HazardClass::COUNT as u64);
            metrics.bins_closed(KeyKind::Vehicle).inc_by(fed);
        }
        metrics.count_alerts(&self.alerts[alerts_before..]);
        if let (false, Some(source)) = (settings.detection.cohorts.is_empty(), p.source()) {
            let report = PartitionReport::build(&settings.detection, source, self, start, through);
            self.reports.push(report);
        }
    }

    /// A vehicle that left memory sent again, and its committed state came back from the
    /// archive.
    fn returned(&mut self, vehicle_id: &str, mut vehicle: VehicleState, ctx: TaskContext<'_>) {
        // What it comes back with is in the store: its closed bins stay there.
        if ctx.settings.keeps_history_in_store() {
            retention::store_closed_bins(&mut vehicle, self.state.closed_through_ms);
        }
        vehicle.partition = self.partition;
        let at = last_bin(&vehicle, ctx.settings.time.bin_width_ms);
        self.members.join(self.partition, vehicle_id, at);
        self.vehicles.insert(vehicle_id.to_string(), vehicle);
        if ctx.settings.publishes_view {
            self.outbox.view_vehicles.insert(vehicle_id.to_string());
        }
        ctx.metrics.vehicles.inc();
        ctx.metrics.vehicles_returned.inc();
        self.publish_departed();
    }

    /// The pages' count of the partition's vehicles out of memory.
    fn publish_departed(&self) {
        let mut view = self
            .fleet_view
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        view.entry(self.partition).or_default().departed = self.departed.count();
    }

    /// The partition's vehicles that may leave memory ([`retention::may_leave`]) since an
    /// earlier commit (so the store holds all they knew) leave it. Returns those that left,
    /// with their bins.
    fn let_silent_vehicles_go(
        &mut self,
        silent_ms: i64,
        ctx: TaskContext<'_>,
    ) -> Vec<(String, Vec<i64>)> {
        let p = self.partition;
        let (closed, width, now) = (
            self.state.closed_through_ms,
            ctx.settings.time.bin_width_ms,
            ctx.commit,
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
            if !retention::may_leave(vehicle, silent_ms, closed, width)
                || self.state.clocks.holds(id)
            {
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
        let mut gone = Vec::with_capacity(leaving.len());
        for id in leaving {
            if let Some((_, vehicle)) = self.vehicles.remove(&id) {
                self.members.leave(p, &id, last_bin(&vehicle, width));
                self.departed.leave(id.clone(), p, &vehicle);
                ctx.metrics.vehicles.dec();
                ctx.metrics.vehicles_departed.inc();
                let mut bins: Vec<i64> = vehicle.bins.keys().copied().collect();
                if vehicle.retired != BinStats::default() {
                    bins.push(RETIRED_BIN);
                }
                gone.push((id, bins));
            }
        }
        if !gone.is_empty() {
            self.publish_departed();
        }
        gone
    }

    /// The closed bins that the store surely holds (closed two commits ago or more, and not
    /// written since) leave memory: the partition's vehicles visited once per bin it closed.
    fn let_durable_bins_go(&mut self, ctx: TaskContext<'_>) {
        if !ctx.settings.keeps_history_in_store() {
            self.closings.clear();
            return;
        }
        let now = ctx.commit;
        let durable = |written: Option<u64>| written.is_none_or(|at| at + 2 <= now);
        while let Some(&(closed_at, through)) = self.closings.front() {
            if closed_at + 2 > now {
                break;
            }
            self.closings.pop_front();
            let mut stored = 0;
            for id in self.members.of(self.partition) {
                let Some(mut vehicle) = self.vehicles.get_mut(id) else {
                    continue;
                };
                if durable(vehicle.closed_bins_written_at) {
                    stored += retention::store_closed_bins(&mut vehicle, through);
                }
            }
            ctx.metrics.bins_stored.inc_by(stored as u64);
        }
    }

    /// Retires the bins of the partition's vehicles before `horizon_ms` into their sums.
    fn retire_bins(&mut self, horizon_ms: i64, ctx: TaskContext<'_>, delta: &mut StateDelta) {
        let (p, width) = (self.partition, ctx.settings.time.bin_width_ms);
        let held: Vec<String> = self.members.of(p).map(str::to_string).collect();
        for id in held {
            let Some(mut entry) = self.vehicles.get_mut(&id) else {
                continue;
            };
            let vehicle = entry.value_mut();
            let before = last_bin(vehicle, width);
            let mut expired = self.retire_stored_bins(&id, vehicle, horizon_ms);
            expired.extend(retention::retire_bins(vehicle, horizon_ms));
            if expired.is_empty() {
                continue;
            }
            self.members
                .update(&id, Some((p, before)), (p, last_bin(vehicle, width)));
            // What it may leave memory with changed in this very commit: wait again.
            vehicle.quiet_since_commit = None;
            ctx.metrics.bins_retired.inc_by(expired.len() as u64);
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
        match archive.stored_bins(self.partition, id) {
            Ok(stored) => retention::retire_stored_bins(vehicle, &stored, horizon_ms),
            Err(error) => {
                tracing::warn!(%error, vehicle_id = id, "a vehicle's stored bins could not be read to retire them; they wait for the next retirement");
                Vec::new()
            }
        }
    }

    /// The task's share of the next commit: what changed since the last, into `delta`, with
    /// the vehicles that left memory (into `gone`, with their bins) and those back in memory
    /// the group view gets whole (into `returned`).
    pub fn take_delta(
        &mut self,
        ctx: TaskContext<'_>,
        delta: &mut StateDelta,
        gone: &mut Vec<(String, Vec<i64>)>,
        returned: &mut BTreeSet<String>,
    ) {
        let settings = ctx.settings;
        self.let_durable_bins_go(ctx);
        let outbox = std::mem::take(&mut self.outbox);
        outbox::take_vehicles(
            outbox.dirty_vehicles,
            &self.vehicles,
            &mut self.state,
            (ctx.commit, self.closed_at_last_commit),
            delta,
        );
        let moved = !outbox.moved_partitions.is_empty();
        if moved {
            let (time, retention) = (&settings.time, &settings.retention);
            let retire =
                outbox::take_partition(self.partition, &mut self.state, time, retention, delta);
            if let Some(horizon) = retire {
                self.retire_bins(horizon, ctx, delta);
            }
        }
        if !outbox.dirty_fleet.is_empty() {
            let sums = self.state.fleet_sums.clone();
            self.fleet_view
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry(self.partition)
                .or_default()
                .fleet = sums.clone();
            delta.fleet_sums.push((self.partition, sums));
        }
        outbox::take_series(outbox.dirty_series, &self.vehicles, delta);
        if let (Some(silent), true, true) = (
            settings.retention.silent_ms,
            self.departed.may_depart(),
            moved,
        ) {
            gone.extend(self.let_silent_vehicles_go(silent, ctx));
        }
        returned.extend(outbox.view_vehicles);
        if moved {
            self.closed_at_last_commit = self.state.closed_through_ms;
        }
    }

    /// Records processed since the last commit.
    pub fn pending_records(&self) -> usize {
        self.outbox.records
    }

    /// Series fed since the last commit.
    pub fn pending_series(&self) -> usize {
        self.outbox.dirty_series.len()
    }

    /// Vehicles held in memory.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Open episodes and pending reviews of the partition's vehicles.
    pub fn open_episodes_and_reviews(&self) -> (usize, usize) {
        self.vehicles.iter().fold((0, 0), |(open, pending), v| {
            (
                open + v.open_episodes(),
                pending + v.meta.pending_reviews.len(),
            )
        })
    }
}
