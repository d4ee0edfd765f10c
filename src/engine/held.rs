//! The vehicles this process holds in memory, for readers outside the stream (the pages, the
//! demo's report): each partition task's map, read side by side while the tasks write them.
//! A vehicle is its task's (docs/design.md §8); one whose records came on two partitions is
//! held twice, and read here from the lower partition.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::state::{VehicleState, Vehicles};
use crate::partition_id::PartitionId;

/// Every task's vehicles, by partition: a cheap handle to clone.
#[derive(Clone, Default)]
pub struct HeldFleet {
    tasks: Arc<RwLock<BTreeMap<PartitionId, Arc<Vehicles>>>>,
}

impl HeldFleet {
    /// The tasks' maps as they are now (the lock is let go before any map is read).
    fn maps(&self) -> Vec<Arc<Vehicles>> {
        self.tasks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// A task's vehicles join those read.
    pub(super) fn add(&self, partition: PartitionId, vehicles: Arc<Vehicles>) {
        self.tasks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(partition, vehicles);
    }

    /// A released task's vehicles are no longer read.
    pub(super) fn remove(&self, partition: PartitionId) {
        self.tasks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&partition);
    }

    /// The vehicle as it is now, if held.
    pub fn get(&self, id: &str) -> Option<VehicleState> {
        self.maps()
            .iter()
            .find_map(|vehicles| vehicles.get(id).map(|v| v.clone()))
    }

    /// Whether the vehicle is held.
    pub fn contains_key(&self, id: &str) -> bool {
        self.maps().iter().any(|vehicles| vehicles.contains_key(id))
    }

    /// Calls `f` with each vehicle held, partition by partition.
    pub fn for_each(&self, mut f: impl FnMut(&str, &VehicleState)) {
        for vehicles in self.maps() {
            for vehicle in vehicles.iter() {
                f(vehicle.key(), &vehicle);
            }
        }
    }

    /// A copy of every vehicle held, as one map (where two tasks hold a vehicle, the lower
    /// partition's): for tests and checks; it clones each vehicle.
    pub fn snapshot(&self) -> Vehicles {
        let copy = Vehicles::default();
        for vehicles in self.maps().iter().rev() {
            for vehicle in vehicles.iter() {
                copy.insert(vehicle.key().clone(), vehicle.value().clone());
            }
        }
        copy
    }

    /// Vehicles held (one held by two tasks counts twice).
    pub fn len(&self) -> usize {
        self.maps().iter().map(|vehicles| vehicles.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vehicle_is_read_from_the_task_that_holds_it_and_leaves_with_it() {
        let fleet = HeldFleet::default();
        let (p0, p1) = (PartitionId::Source(0), PartitionId::Source(1));
        let (zero, one) = (Arc::new(Vehicles::default()), Arc::new(Vehicles::default()));
        fleet.add(p0, Arc::clone(&zero));
        fleet.add(p1, Arc::clone(&one));
        let on = |partition| VehicleState {
            partition,
            ..VehicleState::default()
        };
        zero.insert("a".into(), on(p0));
        one.insert("b".into(), on(p1));
        // Written after the handle was made: read as it is now.
        one.insert("a".into(), on(p1));
        assert_eq!(fleet.len(), 3);
        assert_eq!(fleet.get("a").map(|v| v.partition), Some(p0));
        assert_eq!(fleet.get("b").map(|v| v.partition), Some(p1));
        let mut seen = Vec::new();
        fleet.for_each(|id, v| seen.push((id.to_string(), v.partition)));
        seen.sort();
        let expected = [("a", p0), ("a", p1), ("b", p1)].map(|(id, p)| (id.to_string(), p));
        assert_eq!(seen, expected);

        fleet.remove(p1);
        assert!(!fleet.contains_key("b"));
        assert_eq!(fleet.get("a").map(|v| v.partition), Some(p0));
        assert_eq!(fleet.len(), 1);
    }
}
