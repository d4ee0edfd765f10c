//! The commit outbox: what changed since the last commit point and is not visible in the state
//! maps themselves (which vehicles, partitions, series and aggregators to write, the cohort
//! reports and alerts to send). [`Engine::take_delta`](super::Engine::take_delta) empties it into
//! a [`StateDelta`](super::StateDelta).

use std::collections::BTreeSet;

use super::cohorts::PartitionReport;
use crate::model::RegressionAlert;
use crate::partition_id::PartitionId;

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
