//! Vehicles that left memory (README "Retention"): which they are, the partition their state is
//! stored under, the bins of theirs the store still keeps, and the archive that brings one back
//! when it sends again. The engine decides who may leave ([`super::retention::may_leave`]); this
//! part keeps the record of who did. No IO of its own: the archive is the store, at the edge.

use std::collections::HashMap;
use std::sync::Arc;

use super::delta::StateDelta;
use super::retention::VehicleArchive;
use super::series::decode_series;
use super::state::VehicleState;
use crate::dead_letter::Rejection;
use crate::detect::fleet_relative::FleetRelativeParams;
use crate::partition_id::PartitionId;

/// The vehicles out of memory, and where they are found again.
#[derive(Default)]
pub struct Departures {
    /// Where vehicles that left memory are loaded from; without one, no vehicle leaves.
    archive: Option<Arc<dyn VehicleArchive>>,
    away: HashMap<String, Departed>,
}

/// A vehicle out of memory.
#[derive(Debug, Clone, Copy)]
struct Departed {
    stored_under: PartitionId,
    /// The first and last of its bins the store still keeps (`None`: all retired).
    kept_bins: Option<(i64, i64)>,
}

impl Departures {
    pub fn set_archive(&mut self, archive: Arc<dyn VehicleArchive>) {
        self.archive = Some(archive);
    }

    /// Where what left memory is read back from, if anywhere.
    pub fn archive(&self) -> Option<&Arc<dyn VehicleArchive>> {
        self.archive.as_ref()
    }

    /// Whether vehicles may leave memory: only with an archive to bring them back from.
    pub fn may_depart(&self) -> bool {
        self.archive.is_some()
    }

    /// Vehicles out of memory.
    pub fn count(&self) -> usize {
        self.away.len()
    }

    /// Vehicles out of memory whose state is stored under partition `p`.
    pub fn in_partition(&self, p: PartitionId) -> usize {
        self.away.values().filter(|d| d.stored_under == p).count()
    }

    /// Forgets the vehicles of partitions given away (`gone`).
    pub fn release(&mut self, gone: impl Fn(&PartitionId) -> bool) {
        self.away.retain(|_, d| !gone(&d.stored_under));
    }

    /// Records that `vehicle`, stored under `p`, left memory.
    pub fn leave(&mut self, id: String, p: PartitionId, vehicle: &VehicleState) {
        let first_in_memory = vehicle.bins.keys().next().copied();
        let first = match vehicle.stored.count {
            0 => first_in_memory,
            _ => Some(vehicle.stored.first_ms),
        };
        let kept_bins = first
            .zip(vehicle.bins.keys().next_back())
            .map(|(first, last)| (first, *last));
        self.away.insert(
            id,
            Departed {
                stored_under: p,
                kept_bins,
            },
        );
    }

    /// A vehicle out of memory that sends again, with its committed state from the archive and
    /// the partition it was stored under; `Ok(None)` if it never left. If it cannot be loaded,
    /// it stays out (in the store) for its next record.
    pub fn bring_back(
        &mut self,
        vehicle_id: &str,
        params: FleetRelativeParams,
    ) -> Result<Option<(PartitionId, VehicleState)>, Rejection> {
        // (Most streams have no vehicle out of memory: no hashing of the id then.)
        if self.away.is_empty() {
            return Ok(None);
        }
        let Some(departed) = self.away.remove(vehicle_id) else {
            return Ok(None);
        };
        let loaded = self.load(departed.stored_under, vehicle_id, params);
        if loaded.is_err() {
            self.away.insert(vehicle_id.to_string(), departed);
        }
        loaded.map(|vehicle| Some((departed.stored_under, vehicle)))
    }

    fn load(
        &self,
        stored_under: PartitionId,
        vehicle_id: &str,
        params: FleetRelativeParams,
    ) -> Result<VehicleState, Rejection> {
        let archive = self
            .archive
            .as_ref()
            .expect("vehicles leave only with an archive");
        let unavailable = |detail: String| Rejection::StateUnavailable {
            vehicle_id: vehicle_id.to_string(),
            detail,
        };
        let (mut vehicle, series) = archive
            .load(stored_under, vehicle_id)
            .map_err(unavailable)?
            .ok_or_else(|| unavailable("not in the state store".into()))?;
        if let Some(bytes) = series {
            vehicle.series = Some(Box::new(
                decode_series(params, &bytes).map_err(|e| unavailable(format!("series: {e}")))?,
            ));
        }
        Ok(vehicle)
    }

    /// The store retires the bins before `horizon_ms` of partition `p`'s vehicles out of
    /// memory, as memory would have (into `delta`).
    pub fn retire_stored(&mut self, p: PartitionId, horizon_ms: i64, delta: &mut StateDelta) {
        for (id, departed) in self.away.iter_mut() {
            if let Some((first, last)) = departed.kept_bins
                && departed.stored_under == p
                && first < horizon_ms
            {
                delta.retire_stored.push((p, id.clone(), horizon_ms));
                departed.kept_bins = (last >= horizon_ms).then_some((horizon_ms, last));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::BinStats;
    use std::sync::Mutex;

    /// An archive that fails while `failing` is set, else hands back what it keeps.
    #[derive(Default)]
    struct Archive {
        failing: Mutex<bool>,
        kept: Mutex<HashMap<String, VehicleState>>,
    }

    impl VehicleArchive for Archive {
        fn load(
            &self,
            _partition: PartitionId,
            vehicle_id: &str,
        ) -> Result<Option<crate::engine::retention::StoredVehicle>, String> {
            if *self.failing.lock().unwrap() {
                return Err("store unavailable".into());
            }
            Ok(self
                .kept
                .lock()
                .unwrap()
                .get(vehicle_id)
                .map(|v| (v.clone(), None)))
        }

        fn stored_bins(
            &self,
            partition: PartitionId,
            vehicle_id: &str,
        ) -> Result<crate::engine::BinMap, String> {
            Ok(self
                .load(partition, vehicle_id)?
                .map(|(v, _)| v.bins)
                .unwrap_or_default())
        }
    }

    fn vehicle_with_bins(bins: &[i64]) -> VehicleState {
        let mut vehicle = VehicleState::default();
        for &bin in bins {
            vehicle.bins.insert(bin, BinStats::default());
        }
        vehicle
    }

    #[test]
    fn a_vehicle_that_cannot_be_loaded_stays_away_for_its_next_record() {
        let archive = Arc::new(Archive::default());
        let mut departures = Departures::default();
        departures.set_archive(Arc::clone(&archive) as Arc<dyn VehicleArchive>);
        let p = PartitionId::Source(3);
        let vehicle = vehicle_with_bins(&[10, 20]);
        archive
            .kept
            .lock()
            .unwrap()
            .insert("v1".into(), vehicle.clone());
        departures.leave("v1".into(), p, &vehicle);
        let params = FleetRelativeParams::default();
        assert!(departures.bring_back("v2", params).unwrap().is_none());

        *archive.failing.lock().unwrap() = true;
        match departures.bring_back("v1", params) {
            Err(Rejection::StateUnavailable { vehicle_id, detail }) => {
                assert_eq!(
                    (vehicle_id.as_str(), detail.as_str()),
                    ("v1", "store unavailable")
                );
            }
            other => panic!("expected StateUnavailable, got {other:?}"),
        }
        assert_eq!(
            departures.in_partition(p),
            1,
            "still away after the failure"
        );

        *archive.failing.lock().unwrap() = false;
        let (stored_under, back) = departures.bring_back("v1", params).unwrap().unwrap();
        assert_eq!((stored_under, back), (p, vehicle));
        assert_eq!(departures.count(), 0);
    }

    #[test]
    fn the_store_retires_an_away_vehicles_bins_once_per_horizon() {
        let mut departures = Departures::default();
        let (p, other) = (PartitionId::Source(0), PartitionId::Source(1));
        departures.leave("v1".into(), p, &vehicle_with_bins(&[10, 20, 30]));
        departures.leave("v2".into(), other, &vehicle_with_bins(&[10]));
        departures.leave("v3".into(), p, &VehicleState::default());

        let mut delta = StateDelta::default();
        departures.retire_stored(p, 25, &mut delta);
        // Only v1: v2 is stored under another partition, v3 keeps no bins.
        assert_eq!(delta.retire_stored, vec![(p, "v1".to_string(), 25)]);
        // The store now keeps its bins from 25: a horizon not past that retires nothing.
        let mut again = StateDelta::default();
        departures.retire_stored(p, 25, &mut again);
        assert!(again.retire_stored.is_empty());
        // Past its last bin, everything goes, and nothing is left to retire after.
        departures.retire_stored(p, 40, &mut again);
        assert_eq!(again.retire_stored, vec![(p, "v1".to_string(), 40)]);
        let mut after = StateDelta::default();
        departures.retire_stored(p, 50, &mut after);
        assert!(after.retire_stored.is_empty());
        departures.release(|q| *q == p);
        assert_eq!((departures.count(), departures.in_partition(other)), (1, 1));
    }
}
