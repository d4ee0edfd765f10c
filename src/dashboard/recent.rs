//! A vehicle page's latest trips and critical events, read from the facts the store keeps (the
//! accepted records' own bytes) rather than held with the vehicle: without the group view the
//! stream keeps no list per vehicle, and a commit writes none (docs/design.md §7). With it, the
//! engine keeps them in the attributes it publishes, for the other processes' pages. Pure: the HTTP edge hands the pages a
//! [`VehicleHistory`] over the store.

use crate::engine::{PartitionId, VehicleMeta, VehicleState};
use crate::model::TelemetryEvent;

pub use crate::engine::RecentRecord;

/// Trips and critical events listed per vehicle page, each.
pub const RECENT: usize = VehicleMeta::RECENT;

/// Where a vehicle's committed records are read back from (the store's facts).
pub trait VehicleHistory {
    /// Calls `f` with each record kept for `vehicle_id` of `partition` under bin `bin_ms`, in
    /// the order accepted. A record that cannot be read is skipped.
    fn records_in_bin(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
        bin_ms: i64,
        f: &mut dyn FnMut(&[u8]),
    );

    /// The bins the store keeps for `vehicle_id` of `partition` (closed ones that left the
    /// engine's memory among them); `None` if they cannot be read.
    fn stored_bins(
        &self,
        partition: PartitionId,
        vehicle_id: &str,
    ) -> Option<std::sync::Arc<crate::engine::BinMap>>;
}

/// No history: pages list no recent records (tests, and where no store is at hand).
pub struct NoHistory;

impl VehicleHistory for NoHistory {
    fn records_in_bin(&self, _: PartitionId, _: &str, _: i64, _: &mut dyn FnMut(&[u8])) {}

    fn stored_bins(
        &self,
        _: PartitionId,
        _: &str,
    ) -> Option<std::sync::Arc<crate::engine::BinMap>> {
        None
    }
}

/// The latest [`RECENT`] trips and critical events, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentLists {
    pub trips: Vec<RecentRecord>,
    pub critical: Vec<RecentRecord>,
}

impl RecentLists {
    /// What `vehicle_id`'s page lists: the lists its attributes carry where the engine keeps
    /// them (with the group view, which is how another process's vehicle has them), else those
    /// of its facts.
    pub fn of_vehicle_page(
        history: &dyn VehicleHistory,
        vehicle_id: &str,
        vehicle: &VehicleState,
    ) -> RecentLists {
        let meta = &vehicle.meta;
        if !meta.recent_trips.is_empty() || !meta.recent_critical.is_empty() {
            let newest_first = |list: &[RecentRecord]| list.iter().rev().cloned().collect();
            return RecentLists {
                trips: newest_first(&meta.recent_trips),
                critical: newest_first(&meta.recent_critical),
            };
        }
        Self::of_vehicle(
            history,
            vehicle.partition,
            vehicle_id,
            vehicle.bins.keys().copied(),
        )
    }

    /// The lists of `vehicle_id`'s records kept under `bins` (its bins with data): read newest
    /// bin first, until both lists are full and no older bin can add to them (a record's bin is
    /// that of its time, so an older bin holds only older records).
    pub fn of_vehicle(
        history: &dyn VehicleHistory,
        partition: PartitionId,
        vehicle_id: &str,
        bins: impl DoubleEndedIterator<Item = i64>,
    ) -> RecentLists {
        let mut lists = Oldest::default();
        for bin in bins.rev() {
            if lists.trips.len() >= RECENT && lists.critical.len() >= RECENT {
                break;
            }
            history.records_in_bin(partition, vehicle_id, bin, &mut |bytes| {
                if let Ok(event) = crate::codec::decode(bytes) {
                    lists.note(&event);
                }
            });
        }
        RecentLists {
            trips: lists.trips.into_iter().rev().collect(),
            critical: lists.critical.into_iter().rev().collect(),
        }
    }
}

/// The lists as they fill, oldest first.
#[derive(Default)]
struct Oldest {
    trips: Vec<RecentRecord>,
    critical: Vec<RecentRecord>,
}

impl Oldest {
    fn note(&mut self, event: &TelemetryEvent<'_>) {
        if let Some((trip, record)) = RecentRecord::of(&event.payload, event.event_time_ms) {
            let list = if trip {
                &mut self.trips
            } else {
                &mut self.critical
            };
            VehicleMeta::note_recent(list, record);
        }
    }
}
