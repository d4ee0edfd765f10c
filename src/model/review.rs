//! The review loop's messages (docs/design.md §4): a request for a trip chosen under the review
//! budget, and the review service's result, the critical events its review confirmed.

use std::borrow::Cow;

use super::SafetyEvent;

/// A trip the engine chose for review, published to `review.requests` keyed by vehicle id.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReviewRequest {
    pub trip_id: String,
    pub vehicle_id: String,
    pub trip_start_ms: i64,
    pub trip_end_ms: i64,
    /// The probability the trip was chosen with (its Horvitz-Thompson weight is 1 / this).
    pub inclusion_probability: f64,
    pub policy: String,
}

/// What a review of one trip's logs found: its critical events, each with its event time
/// (possibly none). Arrives on the telemetry topic as a record of its own schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewResult<'a> {
    pub trip_id: Cow<'a, str>,
    /// (event time ms, event); every event's `trip_id` is the result's.
    pub events: Vec<(i64, SafetyEvent<'a>)>,
}
