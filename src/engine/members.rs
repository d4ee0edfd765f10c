//! Which vehicles each source partition holds in memory, ordered by the start of the last bin
//! each has data in ([`last_bin`]). A partition's bin close, retention and release visit its
//! own vehicles instead of every vehicle of the process, and the vehicles silent long enough to
//! leave memory are the front of the order, not a scan (docs/design.md §8). Pure.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use super::state::VehicleState;
use crate::partition_id::PartitionId;

/// The start of the last bin `vehicle` has data in; where retention left it none, the bin of
/// its latest record.
pub fn last_bin(vehicle: &VehicleState, width_ms: i64) -> i64 {
    vehicle
        .bins
        .keys()
        .next_back()
        .copied()
        .unwrap_or_else(|| vehicle.meta.last_event_time_ms.div_euclid(width_ms) * width_ms)
}

/// Per source partition, its vehicles as (last bin, vehicle id).
#[derive(Debug, Default)]
pub struct Members {
    by_partition: HashMap<PartitionId, BTreeSet<(i64, String)>>,
}

impl Members {
    /// `vehicle_id`, whose last bin is `last_bin`, is held for `partition`.
    pub fn join(&mut self, partition: PartitionId, vehicle_id: &str, last_bin: i64) {
        self.by_partition
            .entry(partition)
            .or_default()
            .insert((last_bin, vehicle_id.to_string()));
    }

    /// `vehicle_id`, indexed under `last_bin`, is no longer held for `partition`.
    pub fn leave(&mut self, partition: PartitionId, vehicle_id: &str, last_bin: i64) {
        if let Some(members) = self.by_partition.get_mut(&partition) {
            members.remove(&(last_bin, vehicle_id.to_string()));
            if members.is_empty() {
                self.by_partition.remove(&partition);
            }
        }
    }

    /// A vehicle changed: from `from` (partition, last bin) to `to`; `from` `None` for a vehicle
    /// new to memory.
    pub fn update(
        &mut self,
        vehicle_id: &str,
        from: Option<(PartitionId, i64)>,
        to: (PartitionId, i64),
    ) {
        if from == Some(to) {
            return;
        }
        if let Some((partition, last_bin)) = from {
            self.leave(partition, vehicle_id, last_bin);
        }
        self.join(to.0, vehicle_id, to.1);
    }

    /// The ids of `partition`'s vehicles, by last bin, then id.
    pub fn of(&self, partition: PartitionId) -> impl Iterator<Item = &str> {
        self.by_partition
            .get(&partition)
            .into_iter()
            .flat_map(|members| members.iter().map(|(_, id)| id.as_str()))
    }

    /// The ids of `partition`'s vehicles whose last bin starts at or before `through_ms`.
    pub fn silent_through(
        &self,
        partition: PartitionId,
        through_ms: i64,
    ) -> impl Iterator<Item = &str> {
        let end = match through_ms.checked_add(1) {
            Some(next) => Bound::Excluded((next, String::new())),
            None => Bound::Unbounded,
        };
        self.by_partition
            .get(&partition)
            .into_iter()
            .flat_map(move |members| {
                members
                    .range((Bound::Unbounded, end.clone()))
                    .map(|(_, id)| id.as_str())
            })
    }

    /// How many vehicles `partition` holds.
    pub fn count(&self, partition: PartitionId) -> usize {
        self.by_partition.get(&partition).map_or(0, BTreeSet::len)
    }

    /// The partitions that hold a vehicle.
    pub fn partitions(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.by_partition.keys().copied()
    }

    /// Forgets the partitions `gone` says: returns their vehicles' ids.
    pub fn release(&mut self, gone: impl Fn(&PartitionId) -> bool) -> Vec<String> {
        let released: Vec<PartitionId> = self.partitions().filter(|p| gone(p)).collect();
        released
            .into_iter()
            .filter_map(|p| self.by_partition.remove(&p))
            .flat_map(|members| members.into_iter().map(|(_, id)| id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_lists_its_own_vehicles_and_the_silent_ones_by_their_last_bin() {
        let (p0, p1) = (PartitionId::Source(0), PartitionId::Source(1));
        let mut members = Members::default();
        members.join(p0, "a", 10);
        members.join(p0, "b", 30);
        members.join(p0, "c", 20);
        members.join(p1, "d", 5);
        assert_eq!(members.of(p0).collect::<Vec<_>>(), ["a", "c", "b"]);
        assert_eq!(
            members.silent_through(p0, 20).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(members.silent_through(p0, 19).collect::<Vec<_>>(), ["a"]);
        assert_eq!(members.silent_through(p0, i64::MAX).count(), 3);
        assert_eq!(members.silent_through(p0, i64::MIN).count(), 0);
        // A record moves a vehicle's last bin; a repartitioned vehicle changes partition.
        members.update("a", Some((p0, 10)), (p0, 40));
        members.update("c", Some((p0, 20)), (p1, 20));
        assert_eq!(members.of(p0).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(members.of(p1).collect::<Vec<_>>(), ["d", "c"]);
        assert_eq!((members.count(p0), members.count(p1)), (2, 2));
        let released = members.release(|p| *p == p1);
        assert_eq!(released, ["d", "c"]);
        assert_eq!(members.partitions().collect::<Vec<_>>(), [p0]);
        members.leave(p0, "b", 30);
        members.leave(p0, "a", 40);
        assert_eq!(members.partitions().count(), 0);
    }
}
