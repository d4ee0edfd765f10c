//! How long the state keeps what the stream accepted, in event time (README "Retention").
//!
//! Owns the horizons: behind a partition's watermark, fact segments (the raw records the refit
//! and the warehouse read) are kept for `facts`, and bins for `bins`, never a bin still open. A
//! bin that leaves is added to its vehicle's retired sum, so totals stay whole; the store
//! deletes what expired and the changelog carries the deletes as tombstones, so compaction
//! reclaims them. Horizons are whole bins and follow only the watermark, so where they stand
//! after a stream does not depend on when commits fell. Pure: no IO.

use super::state::VehicleState;

/// How much event time each kind of state spans behind its partition's watermark (`None`:
/// kept for ever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub facts_ms: Option<i64>,
    pub bins_ms: Option<i64>,
    /// A vehicle with no record for this long is paused ([`super::detection::DetectionSettings::paused`])
    /// and, where the engine has a [`VehicleArchive`], leaves memory once the store holds all it
    /// knows; its next record brings it back.
    pub silent_ms: Option<i64>,
}

impl Retention {
    /// The horizons `config` sets (`[retention]`, and the refit's window for the facts).
    pub fn of(config: &crate::config::Config) -> Retention {
        let r = &config.retention;
        if !r.enabled {
            return Retention::KEEP_ALL;
        }
        let day = 86_400_000i64;
        Retention {
            facts_ms: Some(i64::from(config.refit.window_days + r.facts_margin_days) * day),
            bins_ms: Some(i64::from(r.bin_days) * day),
            silent_ms: (r.vehicle_silent_days > 0).then(|| i64::from(r.vehicle_silent_days) * day),
        }
    }

    /// Everything kept, as before retention existed.
    pub const KEEP_ALL: Retention = Retention {
        facts_ms: None,
        bins_ms: None,
        silent_ms: None,
    };

    /// The start of the first bin whose facts a partition at `watermark_ms` keeps (`i64::MIN`:
    /// all): never past the bins it has closed (`closed_through_ms`).
    pub fn facts_horizon(&self, watermark_ms: i64, closed_through_ms: i64, width_ms: i64) -> i64 {
        horizon(self.facts_ms, watermark_ms, width_ms).min(closed_through_ms)
    }

    /// The start of the first bin a partition at `watermark_ms` keeps: never past the bins it
    /// has closed (`closed_through_ms`), which the detectors have read.
    pub fn bins_horizon(&self, watermark_ms: i64, closed_through_ms: i64, width_ms: i64) -> i64 {
        horizon(self.bins_ms, watermark_ms, width_ms).min(closed_through_ms)
    }
}

fn horizon(span_ms: Option<i64>, watermark_ms: i64, width_ms: i64) -> i64 {
    match span_ms {
        Some(span) if watermark_ms != i64::MIN => {
            watermark_ms.saturating_sub(span).div_euclid(width_ms) * width_ms
        }
        _ => i64::MIN,
    }
}

/// A vehicle's committed state as the store gives it back: its series still encoded.
pub type StoredVehicle = (VehicleState, Option<Vec<u8>>);

/// Where vehicles that left memory are found again: the state store, at the edge.
pub trait VehicleArchive: Send + Sync {
    /// The vehicle's state as last committed under `partition` (its series still encoded), or
    /// `None` if the store has none.
    fn load(
        &self,
        partition: crate::partition_id::PartitionId,
        vehicle_id: &str,
    ) -> Result<Option<StoredVehicle>, String>;

    /// The bins the store keeps for the vehicle under `partition` (not its retired sum).
    fn stored_bins(
        &self,
        partition: crate::partition_id::PartitionId,
        vehicle_id: &str,
    ) -> Result<super::bin_map::BinMap, String>;
}

/// Whether `vehicle` may leave memory now: paused since a bin its partition has closed (so
/// every bin it will not be paused in has been fed), nothing of it uncommitted, no open
/// episode, no review awaited.
pub fn may_leave(
    vehicle: &VehicleState,
    silent_ms: i64,
    closed_through_ms: i64,
    width_ms: i64,
) -> bool {
    let last_bin = vehicle
        .bins
        .keys()
        .next_back()
        .copied()
        .unwrap_or_else(|| vehicle.meta.last_event_time_ms.div_euclid(width_ms) * width_ms);
    last_bin.saturating_add(silent_ms) <= closed_through_ms
        && vehicle.dirty_bins.is_empty()
        && vehicle.pending_facts.0.is_empty()
        && vehicle.pending_timeline.0.is_empty()
        && !vehicle.series_dirty
        && vehicle.open_episodes() == 0
        && vehicle.meta.pending_reviews.is_empty()
        && vehicle.meta.awaiting_review.is_empty()
}

/// Lets the vehicle's bins before `before_ms` (closed, and in the store: the caller knows the
/// commit that last wrote them is durable) leave memory, counted in [`VehicleState::stored`].
/// Its latest bin stays (what its clock and its ordering among its partition's vehicles read),
/// and so does every bin from the first changed since the last commit on. Nothing leaves while
/// a review is awaited: its answer is credited to the bins of the reviewed events. Returns how
/// many bins left.
pub fn store_closed_bins(vehicle: &mut VehicleState, before_ms: i64) -> usize {
    if !vehicle.meta.awaiting_review.is_empty() || !vehicle.meta.pending_reviews.is_empty() {
        return 0;
    }
    let Some(&last) = vehicle.bins.keys().next_back() else {
        return 0;
    };
    let mut cut = before_ms.min(last);
    if let Some(&changed) = vehicle.dirty_bins.first() {
        cut = cut.min(changed);
    }
    if vehicle
        .bins
        .first_key_value()
        .is_none_or(|(&first, _)| first >= cut)
    {
        return 0;
    }
    let kept = vehicle.bins.split_off(&cut);
    let leaving = std::mem::replace(&mut vehicle.bins, kept);
    for (&bin, stats) in &leaving {
        vehicle.stored.keep(bin, stats);
    }
    leaving.len()
}

/// Moves the vehicle's bins before `horizon_ms` into its retired sum; returns their starts.
pub fn retire_bins(vehicle: &mut VehicleState, horizon_ms: i64) -> Vec<i64> {
    if vehicle
        .bins
        .first_key_value()
        .is_none_or(|(&first, _)| first >= horizon_ms)
    {
        return Vec::new();
    }
    let kept = vehicle.bins.split_off(&horizon_ms);
    let expired = std::mem::replace(&mut vehicle.bins, kept);
    let mut retired = vehicle.retired;
    for stats in expired.values() {
        retired.add(stats);
    }
    vehicle.retired = retired;
    expired.into_keys().collect()
}

/// [`retire_bins`] for the bins of the vehicle only the store holds, `stored` as the store
/// gives them back: those from `horizon_ms` on stay counted in [`VehicleState::stored`], and
/// the rest of what it counted joins the retired sum. (The rest, not the bins the store
/// returns before the horizon: a commit in flight may have retired some of them already, in
/// the store, while the vehicle was out of memory.) Returns the starts of the stored bins
/// before the horizon, to delete.
pub fn retire_stored_bins(
    vehicle: &mut VehicleState,
    stored: &super::bin_map::BinMap,
    horizon_ms: i64,
) -> Vec<i64> {
    let mut expired = Vec::new();
    let mut still = super::state::StoredBins::default();
    // A bin in memory too is the newer; the store's copy is the older of the same bin.
    for (&bin, stats) in stored.iter().filter(|(b, _)| !vehicle.bins.contains_key(b)) {
        if bin < horizon_ms {
            expired.push(bin);
        } else {
            still.keep(bin, stats);
        }
    }
    vehicle.retired.add(&vehicle.stored.sum.less(&still.sum));
    vehicle.stored = still;
    expired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::BinStats;

    const DAY: i64 = 86_400_000;

    fn trips(n: u64) -> BinStats {
        BinStats {
            trips: n,
            ..BinStats::default()
        }
    }

    /// A vehicle with bins 0..n (bin b with b + 1 trips).
    fn vehicle_with(n: i64) -> VehicleState {
        let mut v = VehicleState::default();
        for b in 0..n {
            v.bins.insert(b * DAY, trips(b as u64 + 1));
        }
        v
    }

    #[test]
    fn closed_bins_leave_but_the_latest_the_changed_and_those_of_an_awaited_review_stay() {
        let mut v = vehicle_with(6);
        let total = v.totals();
        // Closed through day 5: days 0-4 may go; day 2 changed since the last commit.
        v.dirty_bins.insert(2 * DAY);
        assert_eq!(store_closed_bins(&mut v, 5 * DAY), 2);
        assert_eq!(
            v.bins.keys().copied().collect::<Vec<_>>(),
            [2, 3, 4, 5].map(|d| d * DAY)
        );
        assert_eq!(
            (v.stored.count, v.stored.first_ms, v.stored.sum.trips),
            (2, 0, 3)
        );
        assert_eq!(v.totals(), total, "the totals count them still");
        // Committed: all closed ones go, the latest stays even when closed.
        v.dirty_bins.clear();
        assert_eq!(store_closed_bins(&mut v, 9 * DAY), 3);
        assert_eq!(v.bins.keys().copied().collect::<Vec<_>>(), [5 * DAY]);
        assert_eq!(v.totals(), total);
        // A review awaited: nothing leaves (its answer credits the reviewed events' bins).
        let mut v = vehicle_with(6);
        v.meta.awaiting_review.push(("trip".into(), DAY));
        assert_eq!(store_closed_bins(&mut v, 5 * DAY), 0);
    }

    #[test]
    fn a_vehicle_whose_recent_bins_are_in_the_store_is_not_paused() {
        use crate::engine::detection::DetectionSettings;
        let mut settings =
            DetectionSettings::new(&crate::config::DetectorConfig::default(), DAY, DAY);
        settings.pause_after_ms = Some(30 * DAY);
        // Data on days 0-9 and on day 20 (a record for an open bin after a quiet spell);
        // days 0-8 left memory, day 9 among them once day 20 came.
        let mut v = vehicle_with(10);
        v.bins.insert(20 * DAY, trips(1));
        store_closed_bins(&mut v, 12 * DAY);
        assert_eq!(v.bins.keys().copied().collect::<Vec<_>>(), [20 * DAY]);
        assert_eq!(v.stored.last_ms, 9 * DAY);
        let last = Some(v.stored.last_ms);
        // Closing day 12: the last data was day 9, within the 30 days.
        assert!(!settings.paused_with_stored(&v.bins, last, 12 * DAY));
        assert!(
            settings.paused(&v.bins, 12 * DAY),
            "as the bins in memory alone say"
        );
        // Day 39 is 30 days after day 9: paused without day 20, not with it.
        let mut without_20 = vehicle_with(10);
        store_closed_bins(&mut without_20, 12 * DAY);
        let last_9 = Some(without_20.stored.last_ms);
        assert!(settings.paused_with_stored(&without_20.bins, last_9, 39 * DAY));
        assert!(!settings.paused_with_stored(&without_20.bins, last_9, 38 * DAY));
        assert!(!settings.paused_with_stored(&v.bins, last, 39 * DAY));
    }

    #[test]
    fn stored_bins_retire_whole_even_where_a_commit_in_flight_deleted_some() {
        let mut v = vehicle_with(6);
        let total = v.totals();
        store_closed_bins(&mut v, 5 * DAY);
        // The store has days 0-5; retire before day 3.
        let stored = vehicle_with(6).bins;
        let expired = retire_stored_bins(&mut v, &stored, 3 * DAY);
        assert_eq!(expired, [0, DAY, 2 * DAY]);
        assert_eq!(
            (v.retired.trips, v.stored.count, v.stored.first_ms),
            (6, 2, 3 * DAY)
        );
        assert_eq!(v.totals(), total);
        // Out of memory, the store retired days 0-1 (in a commit not read yet when the
        // vehicle came back with them): what the stored sum counted is retired all the same.
        let mut v = vehicle_with(6);
        store_closed_bins(&mut v, 5 * DAY);
        let stored = vehicle_with(6).bins.split_off(&(2 * DAY));
        let expired = retire_stored_bins(&mut v, &stored, 3 * DAY);
        assert_eq!(expired, [2 * DAY]);
        assert_eq!(v.totals(), total);
        assert_eq!(v.retired.trips, 6);
    }

    #[test]
    fn the_configured_horizons_are_as_documented() {
        use crate::config::Config;
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let config = Config::load(
            None,
            env(&[("SAFETEL_RETENTION__VEHICLE_SILENT_DAYS", "0")]),
        )
        .unwrap();
        assert_eq!(Retention::of(&config).silent_ms, None, "0: never paused");
        let day = 86_400_000;
        let defaults = Retention::of(&Config::default_config());
        assert_eq!(defaults.facts_ms, Some(97 * day));
        assert_eq!(defaults.bins_ms, Some(400 * day));
        assert_eq!(defaults.silent_ms, Some(30 * day));
        let off = Config::load(None, env(&[("SAFETEL_RETENTION__ENABLED", "false")])).unwrap();
        assert_eq!(Retention::of(&off), Retention::KEEP_ALL);
    }

    #[test]
    fn horizons_are_whole_bins_behind_the_watermark_and_never_past_the_closed_bins() {
        let r = Retention {
            facts_ms: Some(10 * DAY),
            bins_ms: Some(30 * DAY),
            silent_ms: None,
        };
        let watermark = 100 * DAY + 5 * 3_600_000;
        assert_eq!(r.facts_horizon(watermark, 99 * DAY, DAY), 90 * DAY);
        assert_eq!(
            r.facts_horizon(watermark, 80 * DAY, DAY),
            80 * DAY,
            "open bins keep facts"
        );
        assert_eq!(r.bins_horizon(watermark, 99 * DAY, DAY), 70 * DAY);
        assert_eq!(r.bins_horizon(watermark, 50 * DAY, DAY), 50 * DAY);
        assert_eq!(
            r.facts_horizon(i64::MIN, i64::MIN, DAY),
            i64::MIN,
            "no watermark yet"
        );
        assert_eq!(
            Retention::KEEP_ALL.bins_horizon(watermark, 99 * DAY, DAY),
            i64::MIN
        );
    }

    #[test]
    fn retired_bins_keep_the_totals_whole() {
        let mut v = VehicleState::default();
        for day in 0..10 {
            v.bins.insert(
                day * DAY,
                BinStats {
                    trips: 1 + day as u64,
                    exposure_ms: 1000,
                    ..Default::default()
                },
            );
        }
        let before = v.totals();
        assert_eq!(retire_bins(&mut v, 4 * DAY), vec![0, DAY, 2 * DAY, 3 * DAY]);
        assert_eq!(v.bins.len(), 6);
        assert_eq!(
            retire_bins(&mut v, 4 * DAY),
            Vec::<i64>::new(),
            "nothing twice"
        );
        assert_eq!(retire_bins(&mut v, 7 * DAY).len(), 3);
        assert_eq!(v.totals(), before);
        assert_eq!(v.retired.trips, 1 + 2 + 3 + 4 + 5 + 6 + 7);
    }
}
