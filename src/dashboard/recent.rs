//! A vehicle page's latest trips and critical events, read from the facts the store keeps (the
//! accepted records' own bytes) rather than held with the vehicle: the stream keeps no list per
//! vehicle, and a commit writes none (docs/design.md §7). Pure: the HTTP edge hands the pages a
//! [`VehicleHistory`] over the store.

use serde::Serialize;

use crate::engine::PartitionId;
use crate::model::{Payload, TelemetryEvent};

/// Trips and critical events listed per vehicle page, each.
pub const RECENT: usize = 10;

/// A trip or critical event, as a vehicle's page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentRecord {
    /// The trip's id (a critical event's trip).
    pub trip_id: String,
    /// A trip's end, an event's time.
    pub time_ms: i64,
    /// A trip's duration; an event's type and severity.
    pub detail: String,
}

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
}

/// No history: pages list no recent records (tests, and where no store is at hand).
pub struct NoHistory;

impl VehicleHistory for NoHistory {
    fn records_in_bin(&self, _: PartitionId, _: &str, _: i64, _: &mut dyn FnMut(&[u8])) {}
}

/// The latest [`RECENT`] trips and critical events, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentLists {
    pub trips: Vec<RecentRecord>,
    pub critical: Vec<RecentRecord>,
}

impl RecentLists {
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
        match &event.payload {
            Payload::Trip(t) => keep_latest(
                &mut self.trips,
                RecentRecord {
                    trip_id: t.trip_id.to_string(),
                    time_ms: t.end_time_ms,
                    detail: format!("{:.0} min, {:.1} km", t.duration_s / 60.0, t.distance_km),
                },
            ),
            Payload::Safety(e) if e.is_critical() => keep_latest(
                &mut self.critical,
                RecentRecord {
                    trip_id: e.trip_id.to_string(),
                    time_ms: event.event_time_ms,
                    detail: format!("{:?}, {:?} severity", e.event_type, e.severity),
                },
            ),
            _ => {}
        }
    }
}

/// Keeps `record` among the latest of `list` (by time, then trip id; oldest first, at most
/// [`RECENT`]).
fn keep_latest(list: &mut Vec<RecentRecord>, record: RecentRecord) {
    let at = list.partition_point(|r| (r.time_ms, &r.trip_id) <= (record.time_ms, &record.trip_id));
    if at == 0 && list.len() >= RECENT {
        return;
    }
    list.insert(at, record);
    if list.len() > RECENT {
        list.remove(0);
    }
}
