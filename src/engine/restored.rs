//! [`RestoredState`]: what a store hands the engine at start-up or when partitions are
//! assigned, and [`RestoreError`], when it cannot be used. Pure data.

use std::collections::HashMap;

use super::cohorts::AggregatorProgress;
use super::state::{FleetSums, PartitionState, Prior, VehicleState};
use crate::detect::StateDecodeError;
use crate::partition_id::PartitionId;

/// State restored from the store at start-up.
#[derive(Debug)]
pub struct RestoredState {
    pub vehicles: Vec<(String, VehicleState)>,
    pub partitions: HashMap<PartitionId, PartitionState>,
    /// (partition, vehicle id or cohort key, encoded series) as the store holds them.
    pub series: Vec<(PartitionId, String, Vec<u8>)>,
    /// (aggregator, progress) of the cohort aggregators.
    pub aggregators: Vec<(i32, AggregatorProgress)>,
    /// Per-vehicle priors from the last refit that converged.
    pub priors: Vec<(String, Prior)>,
    /// The fleet sums of source partitions, where the store kept them (else they are summed
    /// from the bins, which is exact only while no bin has been retired).
    pub fleet_sums: HashMap<PartitionId, FleetSums>,
}

impl Default for RestoredState {
    /// Nothing: no vehicles, partitions or series, no bin closed.
    fn default() -> Self {
        RestoredState {
            vehicles: Vec::new(),
            partitions: HashMap::new(),
            series: Vec::new(),
            aggregators: Vec::new(),
            priors: Vec::new(),
            fleet_sums: HashMap::new(),
        }
    }
}

/// Restored state the engine cannot use.
#[derive(Debug, thiserror::Error)]
#[error("series state of `{key}` (partition {partition}): {source}")]
pub struct RestoreError {
    pub partition: PartitionId,
    pub key: String,
    pub source: StateDecodeError,
}
