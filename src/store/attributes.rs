//! The `vehicles` column family's body from version 2 on: a vehicle's attributes
//! ([`VehicleMeta`]) in Avro-style binary (zig-zag varints, length-prefixed strings), in field
//! order. A commit rewrites the attributes of every vehicle it touched, so this is on the commit
//! path: about 40 bytes where version 1's JSON, with the page's recent lists it then always
//! carried, took about 900 (docs/design.md §7). The lists are kept only where the engine
//! publishes the group view (other processes' pages read them there).
//!
//! | field | encoding |
//! |---|---|
//! | vehicle model, firmware version | string |
//! | last event time (ms) | long |
//! | firmware history | count, then (since ms: long, version: string) each |
//! | critical events awaiting review | count, then (trip id: string, bin: long) each |
//! | pending reviews | count, then (trip id: string, start, end, risk exposure, HT weight, HT variance unit: long) each |
//! | latest trips, then latest critical events (group view only, else empty) | count, then (trip id: string, time: long, detail: string) each |

use crate::codec::{Reader, write_long, write_string};
use crate::engine::{PendingReview, RecentRecord, VehicleMeta};

/// Appends `meta`'s binary body.
pub fn encode(meta: &VehicleMeta, out: &mut Vec<u8>) {
    write_string(&meta.vehicle_model, out);
    write_string(&meta.firmware_version, out);
    write_long(meta.last_event_time_ms, out);
    write_long(meta.firmware_history.len() as i64, out);
    for (since_ms, version) in &meta.firmware_history {
        write_long(*since_ms, out);
        write_string(version, out);
    }
    write_long(meta.awaiting_review.len() as i64, out);
    for (trip_id, bin) in &meta.awaiting_review {
        write_string(trip_id, out);
        write_long(*bin, out);
    }
    write_long(meta.pending_reviews.len() as i64, out);
    for review in &meta.pending_reviews {
        write_string(&review.trip_id, out);
        for n in [
            review.trip_start_ms,
            review.trip_end_ms,
            review.risk_exposure_ms as i64,
            review.ht_weight_micro as i64,
            review.ht_variance_unit_micro as i64,
        ] {
            write_long(n, out);
        }
    }
    for list in [&meta.recent_trips, &meta.recent_critical] {
        write_long(list.len() as i64, out);
        for record in list {
            write_string(&record.trip_id, out);
            write_long(record.time_ms, out);
            write_string(&record.detail, out);
        }
    }
}

/// `meta` without the latest trips and critical events (attributes of an earlier format, which
/// kept them whether or not the group view was published).
pub fn without_recent_lists(mut meta: VehicleMeta) -> VehicleMeta {
    meta.recent_trips.clear();
    meta.recent_critical.clear();
    meta
}

/// Reads [`encode`]'s body; `None` unless it is exactly one such value.
pub fn decode(body: &[u8]) -> Option<VehicleMeta> {
    let mut reader = Reader::new(body);
    let meta = read(&mut reader).ok()?;
    reader.finish().ok()?;
    Some(meta)
}

fn read(r: &mut Reader<'_>) -> Result<VehicleMeta, crate::codec::DecodeError> {
    let vehicle_model = r.string()?.to_string();
    let firmware_version = r.string()?.to_string();
    let last_event_time_ms = r.long()?;
    let firmware_history = list(r, |r| Ok((r.long()?, r.string()?.to_string())))?;
    let awaiting_review = list(r, |r| Ok((r.string()?.to_string(), r.long()?)))?;
    let pending_reviews = list(r, |r| {
        Ok(PendingReview {
            trip_id: r.string()?.to_string(),
            trip_start_ms: r.long()?,
            trip_end_ms: r.long()?,
            risk_exposure_ms: r.long()? as u64,
            ht_weight_micro: r.long()? as u64,
            ht_variance_unit_micro: r.long()? as u64,
        })
    })?;
    let recent_trips = list(r, recent_record)?;
    let recent_critical = list(r, recent_record)?;
    Ok(VehicleMeta {
        vehicle_model,
        firmware_version,
        last_event_time_ms,
        firmware_history,
        awaiting_review,
        pending_reviews,
        recent_trips,
        recent_critical,
    })
}

fn recent_record(r: &mut Reader<'_>) -> Result<RecentRecord, crate::codec::DecodeError> {
    Ok(RecentRecord {
        trip_id: r.string()?.to_string(),
        time_ms: r.long()?,
        detail: r.string()?.to_string(),
    })
}

/// A count, then that many items; a count the body cannot hold is refused before allocating.
fn list<T>(
    r: &mut Reader<'_>,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T, crate::codec::DecodeError>,
) -> Result<Vec<T>, crate::codec::DecodeError> {
    let at = r.position();
    let count = r.long()?;
    if !(0..=r.remaining() as i64).contains(&count) {
        return Err(crate::codec::DecodeError::NegativeLength { len: count, at });
    }
    (0..count).map(|_| item(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_meta() -> VehicleMeta {
        VehicleMeta {
            vehicle_model: "AV-4".into(),
            firmware_version: "3.1.0".into(),
            last_event_time_ms: 1_700_000_123_456,
            firmware_history: vec![(1_699_000_000_000, "3.0.2".into()), (-5, "3.1.0".into())],
            awaiting_review: vec![("trip-9".into(), 1_700_000_000_000)],
            pending_reviews: vec![PendingReview {
                trip_id: "trip-7".into(),
                trip_start_ms: 1_699_999_000_000,
                trip_end_ms: 1_700_000_100_000,
                risk_exposure_ms: 5_400_000,
                ht_weight_micro: 4_000_000,
                ht_variance_unit_micro: u64::MAX,
            }],
            recent_trips: vec![RecentRecord {
                trip_id: "trip-7".into(),
                time_ms: 1_700_000_100_000,
                detail: "33 min, 21.0 km".into(),
            }],
            recent_critical: Vec::new(),
        }
    }

    #[test]
    fn attributes_read_back_as_written_and_are_compact() {
        for meta in [VehicleMeta::default(), full_meta()] {
            let mut body = Vec::new();
            encode(&meta, &mut body);
            assert_eq!(decode(&body), Some(meta.clone()));
            let json = serde_json::to_vec(&meta).unwrap();
            // Compact: well under half of the JSON it replaces.
            assert!(
                body.len() * 2 < json.len(),
                "{} vs {}",
                body.len(),
                json.len()
            );
        }
    }

    #[test]
    fn damaged_attributes_are_unreadable_not_guessed() {
        let mut body = Vec::new();
        encode(&full_meta(), &mut body);
        // Cut anywhere, or with a byte more, it is not a value.
        for cut in 0..body.len() {
            assert_eq!(decode(&body[..cut]), None, "cut at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        // A count larger than the body could hold is refused (no allocation from it).
        let mut huge = Vec::new();
        write_string("m", &mut huge);
        write_string("f", &mut huge);
        write_long(0, &mut huge);
        write_long(i64::MAX / 2, &mut huge);
        assert_eq!(decode(&huge), None);
    }
}
