//! The simulated review service: critical events are known only after a review of the trip's
//! logs, so the service holds them back from the telemetry stream and hands a trip's events out
//! when its review is requested. Pure: the caller moves the bytes (Kafka in `safetel generate
//! --review-service`, vectors in tests).

use std::collections::{HashMap, HashSet};

use crate::codec;
use crate::model::{Payload, ReviewRequest, ReviewResult, SafetyEvent, TelemetryEvent};

/// Critical events withheld per trip, until their review is requested.
#[derive(Debug, Default)]
pub struct ReviewDesk {
    /// trip id -> (event time, event) of its critical events.
    withheld: HashMap<String, Vec<(i64, SafetyEvent<'static>)>>,
    /// Trips already answered: a request repeated after a restart gets the same answer again.
    answered: HashMap<String, Vec<(i64, SafetyEvent<'static>)>>,
    /// Requests seen, to count distinct trips.
    requested: HashSet<String>,
}

impl ReviewDesk {
    /// Keeps a critical safety event back from the stream (returns true); any other record
    /// (including one that does not decode: it goes out to be dead-lettered) passes.
    pub fn withhold(&mut self, record: &[u8]) -> bool {
        let Ok(event) = codec::decode(record) else {
            return false;
        };
        if !matches!(&event.payload, Payload::Safety(e) if e.is_critical()) {
            return false;
        }
        let time = event.event_time_ms;
        let Payload::Safety(e) = event.into_owned().payload else {
            return false;
        };
        self.withheld
            .entry(e.trip_id.to_string())
            .or_default()
            .push((time, e));
        true
    }

    /// The answer to a request: the trip's withheld critical events (possibly none), as a
    /// framed `ReviewResult` keyed by vehicle id.
    pub fn answer(&mut self, request: &ReviewRequest) -> (String, Vec<u8>) {
        self.requested.insert(request.trip_id.clone());
        let events = match self.withheld.remove(&request.trip_id) {
            Some(events) => {
                self.answered
                    .insert(request.trip_id.clone(), events.clone());
                events
            }
            None => self
                .answered
                .get(&request.trip_id)
                .cloned()
                .unwrap_or_default(),
        };
        let result = TelemetryEvent {
            vehicle_id: request.vehicle_id.clone().into(),
            event_time_ms: request.trip_end_ms,
            payload: Payload::Review(ReviewResult {
                trip_id: request.trip_id.clone().into(),
                events,
            }),
        };
        (request.vehicle_id.clone(), codec::encode_to_vec(&result))
    }

    /// Critical events held back so far (answered or not).
    pub fn withheld_events(&self) -> usize {
        self.withheld
            .values()
            .chain(self.answered.values())
            .map(Vec::len)
            .sum()
    }

    /// Distinct trips whose review was requested.
    pub fn trips_requested(&self) -> usize {
        self.requested.len()
    }
}
