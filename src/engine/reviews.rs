//! The review desk: which trips are reviewed under a review budget, and how reviews count.
//!
//! Owns the sampling policy's decisions (docs/design.md §4) and the review service's round trip. In
//! the stream (no service), a trip's critical events wait for its summary, which decides the
//! review: a reviewed trip's events count at once. With a service, a selected trip becomes a
//! [`ReviewRequest`], its partition's bins stay open behind a hold until the answer arrives on
//! the stream (or times out), and only the answer's critical events count. A review counts in
//! its vehicle's bins as reviewed risk exposure and Horvitz-Thompson terms ([`credit_review`]).

use crate::metrics::Metrics;
use crate::model::{HazardClass, ReviewRequest, ReviewResult, TripSummary};
use crate::sampling::{SamplingPolicy, Stratum, TripCovariates};

use super::detection::DetectionSettings;
use super::outbox::Outbox;
use super::state::Vehicles;
use super::state::{BinStats, PartitionState, PendingReview, VehicleState};
use crate::dead_letter::Rejection;

/// Critical events kept per vehicle while their trip's summary (which decides the review) is
/// awaited; beyond this the oldest are dropped (a summary that never came: never reviewed).
const AWAITING_REVIEW_MAX: usize = 64;

/// Review decisions and the review service's requests and answers.
#[derive(Default, Clone)]
pub struct ReviewDesk {
    /// The review-budget policy, when trips' critical events count only if reviewed.
    policy: Option<SamplingPolicy>,
    /// With a review service: how far (event time) past a trip's start its review is awaited.
    service_timeout_ms: Option<i64>,
}

impl ReviewDesk {
    /// Trips are reviewed as `policy` decides.
    pub fn use_policy(&mut self, policy: SamplingPolicy) {
        self.policy = Some(policy);
    }

    /// Reviews go to a review service, awaited until the watermark is `timeout_ms` past the
    /// trip's start.
    pub fn use_service(&mut self, timeout_ms: i64) {
        self.service_timeout_ms = Some(timeout_ms);
    }

    /// Whether trips are reviewed under a budget.
    pub fn is_sampling(&self) -> bool {
        self.policy.is_some()
    }

    /// A critical event of `trip_id` in `bin`: in the stream, it waits for its trip's summary.
    /// (With a service only its answers count; without a budget every event counts as it is.)
    pub fn note_critical_event(&self, vehicle: &mut VehicleState, trip_id: &str, bin: i64) {
        if self.policy.is_none() || self.service_timeout_ms.is_some() {
            return;
        }
        let waiting = &mut vehicle.meta.awaiting_review;
        waiting.push((trip_id.to_string(), bin));
        if waiting.len() > AWAITING_REVIEW_MAX {
            waiting.remove(0);
        }
    }

    /// A trip's summary, which decides its review: the policy's inclusion probability from the
    /// trip's covariates and the vehicle's rate relative to its partition's fleet, then either a
    /// request to the service (into `requests`; the partition's bins held for it) or, in the
    /// stream, its critical
    /// events seen so far credited at once. Returns whether the vehicle changed bins no commit
    /// has seen yet for the first time (to be noted in the outbox).
    #[allow(clippy::too_many_arguments)]
    pub fn decide_trip(
        &self,
        requests: &mut Vec<ReviewRequest>,
        vehicle_id: &str,
        vehicle: &mut VehicleState,
        trip: &TripSummary<'_>,
        exposure_ms: u64,
        partition: &mut PartitionState,
        detection: &DetectionSettings,
        width_ms: i64,
        metrics: &Metrics,
    ) -> bool {
        let Some(policy) = &self.policy else {
            return false;
        };
        let stratum = Stratum {
            road: trip.road_type,
            weather: trip.weather,
            night: trip.night,
        };
        // The vehicle's rate relative to its fleet (its baseline: the fleet's, updated with its
        // own reviewed bins older than the guard window), at the configured nominal rate
        // a0 / b0: the policy's scale sets the level, and a fleet mean estimated from the first
        // few reviewed trips would swing it.
        let fleet = detection.vehicle_baseline(HazardClass::Critical, &partition.fleet_sums);
        let series = vehicle.series_of(HazardClass::Critical);
        let baseline = series.map_or(fleet, |s| s.detector.posterior_baseline(fleet));
        let relative = (baseline.shape / baseline.rate) / (fleet.shape / fleet.rate);
        let (a0, b0) = detection.fleet_prior;
        let covariates = TripCovariates {
            trip_id: &trip.trip_id,
            exposure_hours: trip.duration_s / 3600.0,
            stratum,
            vehicle_rate: relative * a0 / b0,
            p_regression: series
                .and_then(|s| s.last.as_ref())
                .map_or(0.0, |l| l.p_regression),
        };
        let scale = match partition.sampling_scale {
            s if s > 0.0 => s,
            _ => policy.initial_scale(&covariates),
        };
        let probability = policy.probability_at(&covariates, scale);
        partition.sampling_scale = policy.next_scale(scale, probability);
        let reviewed = crate::sampling::selected(&trip.trip_id, policy.seed, probability);
        let mut waiting = std::mem::take(&mut vehicle.meta.awaiting_review);
        let mut first_change = false;
        if reviewed {
            metrics.reviews.inc();
            let (ht_weight_micro, ht_variance_unit_micro) = BinStats::ht_terms(probability, 1);
            let review = PendingReview {
                trip_id: trip.trip_id.to_string(),
                trip_start_ms: trip.start_time_ms,
                trip_end_ms: trip.end_time_ms,
                risk_exposure_ms: (exposure_ms as f64 * stratum.relative_risk()).round() as u64,
                ht_weight_micro,
                ht_variance_unit_micro,
            };
            if self.service_timeout_ms.is_some() {
                partition
                    .review_holds
                    .insert(review_hold(vehicle_id, &review));
                requests.push(ReviewRequest {
                    trip_id: review.trip_id.clone(),
                    vehicle_id: vehicle_id.to_string(),
                    trip_start_ms: review.trip_start_ms,
                    trip_end_ms: review.trip_end_ms,
                    inclusion_probability: probability,
                    policy: policy.policy.name().to_string(),
                });
                vehicle.meta.pending_reviews.push(review);
                metrics.reviews_pending.inc();
            } else {
                // In the stream, the answer is the trip's critical events seen so far.
                let critical: Vec<i64> = waiting
                    .iter()
                    .filter(|(id, _)| *id == *trip.trip_id)
                    .map(|(_, bin)| *bin)
                    .collect();
                first_change = credit_review(vehicle, &review, &critical, width_ms);
            }
        }
        waiting.retain(|(id, _)| *id != *trip.trip_id);
        vehicle.meta.awaiting_review = waiting;
        first_change
    }

    /// The service's answer for one of `vehicle`'s pending reviews: its events enter the
    /// vehicle's bins, its critical events count as reviewed, and its partition's hold is
    /// released. Refused if the review is not awaited or an event lies outside the trip.
    /// Returns whether the vehicle changed for the first time since the last commit.
    pub fn answer(
        &self,
        vehicle_id: &str,
        vehicle: &mut VehicleState,
        result: &ReviewResult<'_>,
        partition: &mut PartitionState,
        width_ms: i64,
        metrics: &Metrics,
    ) -> Result<bool, Rejection> {
        let unrequested = || Rejection::UnrequestedReview {
            trip_id: result.trip_id.to_string(),
        };
        let at = vehicle
            .meta
            .pending_reviews
            .iter()
            .position(|p| *p.trip_id == *result.trip_id)
            .ok_or_else(unrequested)?;
        let review = &vehicle.meta.pending_reviews[at];
        if let Some((time, _)) = result
            .events
            .iter()
            .find(|(time, _)| !(review.trip_start_ms..=review.trip_end_ms).contains(time))
        {
            return Err(Rejection::ReviewedEventOutsideTrip {
                trip_id: review.trip_id.clone(),
                event_time_ms: *time,
                start_ms: review.trip_start_ms,
                end_ms: review.trip_end_ms,
            });
        }
        let review = vehicle.meta.pending_reviews.remove(at);
        let mut first_change = false;
        for (time, event) in &result.events {
            let bin = time.div_euclid(width_ms) * width_ms;
            let stats = BinStats {
                safety_events: 1,
                critical: u64::from(event.is_critical()),
                ..BinStats::default()
            };
            first_change |= vehicle.add(bin, &stats);
        }
        let critical: Vec<i64> = result
            .events
            .iter()
            .filter(|(_, e)| e.is_critical())
            .map(|(time, _)| *time)
            .collect();
        first_change |= credit_review(vehicle, &review, &critical, width_ms);
        partition
            .review_holds
            .remove(&review_hold(vehicle_id, &review));
        metrics.review_results("answered").inc();
        metrics.reviews_pending.dec();
        Ok(first_change)
    }

    /// Gives up the partition's reviews whose trips started more than the service's timeout
    /// before its watermark: they count as unreviewed, and their bins may close.
    pub fn give_up_late(
        &self,
        partition: &mut PartitionState,
        vehicles: &Vehicles,
        outbox: &mut Outbox,
        metrics: &Metrics,
    ) {
        let Some(timeout_ms) = self.service_timeout_ms else {
            return;
        };
        while let Some((start, _, _)) = partition.review_holds.first() {
            if *start >= partition.watermark_ms.saturating_sub(timeout_ms) {
                break;
            }
            let (_, vehicle_id, trip_id) = partition.review_holds.pop_first().expect("not empty");
            if let Some(mut vehicle) = vehicles.get_mut(&vehicle_id) {
                let vehicle = &mut *vehicle;
                vehicle
                    .meta
                    .pending_reviews
                    .retain(|r| r.trip_id != trip_id);
                // Rewritten with the vehicle's meta at the next commit.
                if let Some((&bin, _)) = vehicle.bins.last_key_value()
                    && vehicle.touch(bin)
                {
                    outbox.vehicle_changed(&vehicle_id);
                }
            }
            tracing::warn!(%vehicle_id, %trip_id, "review not answered in time; the trip counts as unreviewed");
            metrics.review_results("timed_out").inc();
            metrics.reviews_pending.dec();
        }
    }
}

/// Credits an answered review to its vehicle's bins: the trip's risk-scaled exposure and its
/// Horvitz-Thompson variance term in the bin of its end, and each critical event (at
/// `critical_times`) with its HT weight in its own bin. In-stream reviews are answered at once.
/// Returns whether the vehicle changed for the first time since the last commit.
fn credit_review(
    vehicle: &mut VehicleState,
    review: &PendingReview,
    critical_times: &[i64],
    width: i64,
) -> bool {
    let bin_of = |time: i64| time.div_euclid(width) * width;
    let mut first_change = false;
    for &time in critical_times {
        let stats = BinStats {
            reviewed_critical: 1,
            ht_critical_micro: review.ht_weight_micro,
            ..BinStats::default()
        };
        first_change |= vehicle.add(bin_of(time), &stats);
    }
    let events = critical_times.len() as u64;
    let stats = BinStats {
        reviewed_trips: 1,
        reviewed_risk_exposure_ms: review.risk_exposure_ms,
        ht_variance_micro: review.ht_variance_unit_micro * events * events,
        ..BinStats::default()
    };
    first_change | vehicle.add(bin_of(review.trip_end_ms), &stats)
}

/// A pending review's entry in its partition's holds.
pub fn review_hold(vehicle_id: &str, review: &PendingReview) -> (i64, String, String) {
    (
        review.trip_start_ms,
        vehicle_id.to_string(),
        review.trip_id.clone(),
    )
}
