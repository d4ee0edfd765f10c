//! The engine's hot state: per-vehicle event-time bins and attributes, per-partition stream
//! position (next offset, watermark, recently seen record ids, the fleet's sums), fact and
//! seen-id segments in the making. Pure data; the store persists exactly what is here, keyed by
//! partition, from the [`super::delta::StateDelta`] of each commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dashmap::DashMap;
use serde::Serialize;

pub use crate::hashing::{FnvHashBuilder, FnvHasher, IdHashBuilder, IdHasher, id_hash};

use crate::model::{DrivingMode, HazardClass, Payload, TelemetryEvent, exposure_ms};
use crate::refit::intervals::TimelineItem;
use crate::sampling::Stratum;

/// Counts and exposure of one vehicle in one event-time bin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BinStats {
    pub trips: u64,
    /// Exposure: milliseconds driven in trips that ended in this bin.
    pub exposure_ms: u64,
    /// All safety events, of any severity.
    pub safety_events: u64,
    pub critical: u64,
    pub disengagements: u64,
    pub mode_transitions: u64,
    /// Under a review budget: trips reviewed, their critical events, and their exposure scaled by
    /// the stratum's relative risk (ms). What the critical-class detector sees then.
    pub reviewed_trips: u64,
    pub reviewed_critical: u64,
    pub reviewed_risk_exposure_ms: u64,
    /// Horvitz-Thompson estimate of all critical events (reviewed or not): the sum of 1/pi over
    /// reviewed critical events, in millionths (integers, so that sums are exact in any order).
    pub ht_critical_micro: u64,
    /// Its variance under Poisson sampling, the sum over reviewed trips of
    /// (1 - pi) y^2 / pi^2 with y the trip's critical events, in millionths.
    pub ht_variance_micro: u64,
    /// Exposure scaled by each trip's stratum relative risk (ms): what the critical class's
    /// expected count is proportional to.
    pub risk_exposure_ms: u64,
    /// Time driven in autonomous mode (ms): the disengagement class's exposure.
    pub autonomous_exposure_ms: u64,
    /// What the fleet predicted for this bin before any change, per class (events, in
    /// millionths), set when the vehicle's bin closes; a cohort's expected count is the sum of
    /// its members'.
    pub expected_critical_micro: u64,
    pub expected_disengagements_micro: u64,
}

/// Fixed-point scale of the Horvitz-Thompson sums and expected counts in [`BinStats`].
pub const HT_SCALE: f64 = 1e6;

impl BinStats {
    /// The fields encoded, in [`BinStats::fields`]' order.
    pub const FIELDS: usize = 15;
    pub const ENCODED_LEN: usize = 8 * Self::FIELDS;
    /// Bins written before the Horvitz-Thompson sums (read with those at zero).
    const ENCODED_LEN_V1: usize = 8 * Self::FIELDS_V1;
    /// The fields of the first encoding.
    const FIELDS_V1: usize = 9;
    /// Bins written before the fleet-relative detector's exposures and expected counts.
    const ENCODED_LEN_V2: usize = 88;
    /// Bins of the fifteen fields of the two hazard classes that came first.
    const ENCODED_LEN_V3: usize = 120;

    /// Whether `len` is the length of a fixed-width encoding, of this version or an earlier one.
    fn is_fixed_width(len: usize) -> bool {
        [
            Self::ENCODED_LEN,
            Self::ENCODED_LEN_V3,
            Self::ENCODED_LEN_V2,
            Self::ENCODED_LEN_V1,
        ]
        .contains(&len)
    }

    /// The fleet's expected count of `class` in this bin.
    pub fn expected(&self, class: HazardClass) -> f64 {
        let micro = match class {
            HazardClass::Critical => self.expected_critical_micro,
            HazardClass::Disengagement => self.expected_disengagements_micro,
        };
        micro as f64 / HT_SCALE
    }

    /// Records the fleet's expected count of `class` (fixed point, so sums are exact in any order).
    pub fn set_expected(&mut self, class: HazardClass, expected: f64) {
        let micro = (expected.max(0.0) * HT_SCALE).round() as u64;
        match class {
            HazardClass::Critical => self.expected_critical_micro = micro,
            HazardClass::Disengagement => self.expected_disengagements_micro = micro,
        }
    }

    pub fn risk_exposure_hours(&self) -> f64 {
        self.risk_exposure_ms as f64 / 3_600_000.0
    }

    pub fn autonomous_exposure_hours(&self) -> f64 {
        self.autonomous_exposure_ms as f64 / 3_600_000.0
    }

    /// The Horvitz-Thompson sums of a reviewed trip with inclusion probability `pi` and `y`
    /// critical events: (its events' weight each, the trip's variance term), fixed point.
    pub fn ht_terms(pi: f64, y: u64) -> (u64, u64) {
        let y = y as f64;
        (
            (HT_SCALE / pi).round() as u64,
            (HT_SCALE * (1.0 - pi) * y * y / (pi * pi)).round() as u64,
        )
    }

    /// (estimate, variance) of the critical events behind these stats.
    pub fn ht_critical(&self) -> (f64, f64) {
        (
            self.ht_critical_micro as f64 / HT_SCALE,
            self.ht_variance_micro as f64 / HT_SCALE,
        )
    }

    pub fn count(&self, class: HazardClass) -> u64 {
        match class {
            HazardClass::Critical => self.critical,
            HazardClass::Disengagement => self.disengagements,
        }
    }

    pub fn exposure_hours(&self) -> f64 {
        self.exposure_ms as f64 / 3_600_000.0
    }

    pub fn reviewed_risk_exposure_hours(&self) -> f64 {
        self.reviewed_risk_exposure_ms as f64 / 3_600_000.0
    }

    /// What one accepted record (not a review result, which counts through its review) adds
    /// to its bin.
    pub fn of_payload(payload: &Payload<'_>) -> BinStats {
        match payload {
            Payload::Trip(t) => {
                let driven_ms = exposure_ms(t.duration_s);
                let stratum = Stratum {
                    road: t.road_type,
                    weather: t.weather,
                    night: t.night,
                };
                BinStats {
                    trips: 1,
                    exposure_ms: driven_ms,
                    risk_exposure_ms: (driven_ms as f64 * stratum.relative_risk()).round() as u64,
                    autonomous_exposure_ms: if t.mode == DrivingMode::Autonomous {
                        driven_ms
                    } else {
                        0
                    },
                    ..BinStats::default()
                }
            }
            Payload::Safety(e) => BinStats {
                safety_events: 1,
                critical: u64::from(e.is_critical()),
                ..BinStats::default()
            },
            Payload::Mode(m) => BinStats {
                mode_transitions: 1,
                disengagements: u64::from(m.is_disengagement()),
                ..BinStats::default()
            },
            Payload::Review(_) => BinStats::default(),
        }
    }

    pub fn add(&mut self, other: &BinStats) {
        self.trips += other.trips;
        self.exposure_ms += other.exposure_ms;
        self.safety_events += other.safety_events;
        self.critical += other.critical;
        self.disengagements += other.disengagements;
        self.mode_transitions += other.mode_transitions;
        self.reviewed_trips += other.reviewed_trips;
        self.reviewed_critical += other.reviewed_critical;
        self.reviewed_risk_exposure_ms += other.reviewed_risk_exposure_ms;
        self.ht_critical_micro += other.ht_critical_micro;
        self.ht_variance_micro += other.ht_variance_micro;
        self.risk_exposure_ms += other.risk_exposure_ms;
        self.autonomous_exposure_ms += other.autonomous_exposure_ms;
        self.expected_critical_micro += other.expected_critical_micro;
        self.expected_disengagements_micro += other.expected_disengagements_micro;
    }

    /// These sums less `part`'s (a part of them), field by field.
    pub fn less(&self, part: &BinStats) -> BinStats {
        let (whole, part) = (self.fields(), part.fields());
        let rest: Vec<u64> = whole
            .iter()
            .zip(part)
            .map(|(w, p)| w.saturating_sub(p))
            .collect();
        Self::from_values(&rest)
    }

    fn fields(&self) -> [u64; Self::FIELDS] {
        [
            self.trips,
            self.exposure_ms,
            self.safety_events,
            self.critical,
            self.disengagements,
            self.mode_transitions,
            self.reviewed_trips,
            self.reviewed_critical,
            self.reviewed_risk_exposure_ms,
            self.ht_critical_micro,
            self.ht_variance_micro,
            self.risk_exposure_ms,
            self.autonomous_exposure_ms,
            self.expected_critical_micro,
            self.expected_disengagements_micro,
        ]
    }

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        for (chunk, value) in out.chunks_exact_mut(8).zip(self.fields()) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// The bins column family's encoding: the fields as unsigned LEB128 varints (most are
    /// small or zero: about 20 bytes instead of [`BinStats::ENCODED_LEN`]), with a zero byte
    /// appended where the length would be a multiple of eight, so that it never has the length
    /// of a fixed-width encoding, which [`BinStats::decode`] reads too.
    pub fn encode_compact(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        for mut value in self.fields() {
            while value >= 0x80 {
                out.push((value as u8) | 0x80);
                value >>= 7;
            }
            out.push(value as u8);
        }
        if out.len().is_multiple_of(8) {
            out.push(0);
        }
        out
    }

    /// Reads [`BinStats::encode_compact`]'s bytes, or [`BinStats::encode`]'s (of this version or
    /// an older one, with the fields it lacked at their defaults).
    pub fn decode(bytes: &[u8]) -> Option<BinStats> {
        if !bytes.len().is_multiple_of(8) {
            return Self::decode_compact(bytes);
        }
        if !Self::is_fixed_width(bytes.len()) {
            return None;
        }
        let v: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Some(Self::from_values(&v))
    }

    /// Reads [`BinStats::encode_compact`]'s bytes, of this version or an earlier one: fields
    /// are only ever appended, so a bin written before some were has fewer, which read at their
    /// defaults.
    pub fn decode_compact(bytes: &[u8]) -> Option<BinStats> {
        let mut values = Vec::with_capacity(Self::FIELDS);
        let mut at = 0;
        while values.len() < Self::FIELDS && at < bytes.len() {
            let (mut value, mut shift) = (0u64, 0u32);
            loop {
                let byte = *bytes.get(at)?;
                at += 1;
                if shift > 63 || (shift == 63 && byte > 1) {
                    return None;
                }
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            values.push(value);
        }
        if values.len() < Self::FIELDS_V1 {
            return None;
        }
        let padded = bytes.len() == at + 1 && bytes[at] == 0 && at.is_multiple_of(8);
        (bytes.len() == at || padded).then(|| Self::from_values(&values))
    }

    /// From the fields in [`BinStats::fields`]' order; those missing (older encodings) at
    /// their defaults.
    fn from_values(v: &[u64]) -> BinStats {
        BinStats {
            trips: v[0],
            exposure_ms: v[1],
            safety_events: v[2],
            critical: v[3],
            disengagements: v[4],
            mode_transitions: v[5],
            reviewed_trips: v[6],
            reviewed_critical: v[7],
            reviewed_risk_exposure_ms: v[8],
            ht_critical_micro: v.get(9).copied().unwrap_or(0),
            ht_variance_micro: v.get(10).copied().unwrap_or(0),
            // Older bins knew no strata or modes: all their exposure counts, at risk 1.
            risk_exposure_ms: v.get(11).copied().unwrap_or(v[1]),
            autonomous_exposure_ms: v.get(12).copied().unwrap_or(v[1]),
            expected_critical_micro: v.get(13).copied().unwrap_or(0),
            expected_disengagements_micro: v.get(14).copied().unwrap_or(0),
        }
    }
}

/// Vehicle state by vehicle id, shared with the HTTP API (reads).
pub type Vehicles = DashMap<String, VehicleState, FnvHashBuilder>;

/// What the stream knows about one vehicle.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VehicleState {
    /// Source partition the vehicle's records arrive on (its state moves with it).
    pub partition: crate::partition_id::PartitionId,
    pub meta: VehicleMeta,
    /// Bin start (ms since epoch) -> stats.
    pub bins: super::bin_map::BinMap,
    /// Bins changed since the last commit.
    #[serde(skip)]
    pub dirty_bins: BTreeSet<i64>,
    /// Records accepted since the last commit, by the bin of their record time: fact segments
    /// in the making.
    #[serde(skip)]
    pub pending_facts: PendingFacts,
    /// The refit's timeline items ([`TimelineItem`]) of the records accepted since the last
    /// commit, by the same bins as the facts: timeline segments in the making.
    #[serde(skip)]
    pub pending_timeline: PendingFacts,
    /// The sum of the bins that left the state with retention (retention): what
    /// [`VehicleState::totals`] adds to the bins kept.
    pub retired: BinStats,
    /// Change-point series, one per hazard class; none until the first bin closes.
    pub series: Option<Box<crate::model::ByClass<super::series::Series>>>,
    /// Series changed since the last commit.
    #[serde(skip)]
    pub series_dirty: bool,
    /// Its closed bins that only the store holds now (docs/design.md §7).
    #[serde(skip)]
    pub stored: StoredBins,
    /// The last commit that wrote one of its closed bins (`None`: none since it was loaded):
    /// closed bins leave memory only once that commit is durable.
    #[serde(skip)]
    pub closed_bins_written_at: Option<u64>,
    /// The commit since which the vehicle could leave memory (retention's `may_leave`):
    /// it leaves at a later one, when the store surely holds what it had then.
    #[serde(skip)]
    pub quiet_since_commit: Option<u64>,
}

/// A vehicle's closed bins that left memory for the store once it surely held them: what its
/// totals, its retention and its departure need of them without reading them back. Pages read
/// the bins themselves from the store.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoredBins {
    /// Their sum.
    pub sum: BinStats,
    /// How many.
    pub count: u32,
    /// The first one's start and the last one's (when `count > 0`); every bin in memory is
    /// later than the last.
    pub first_ms: i64,
    pub last_ms: i64,
}

impl StoredBins {
    /// Counts `stats`, of the bin starting at `bin_ms`, among them.
    pub fn keep(&mut self, bin_ms: i64, stats: &BinStats) {
        (self.first_ms, self.last_ms) = if self.count == 0 {
            (bin_ms, bin_ms)
        } else {
            (self.first_ms.min(bin_ms), self.last_ms.max(bin_ms))
        };
        self.count += 1;
        self.sum.add(stats);
    }
}

/// Slowly changing attributes, from the latest trip summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VehicleMeta {
    pub vehicle_model: String,
    pub firmware_version: String,
    pub last_event_time_ms: i64,
    /// (start time of the first trip on it, version), oldest first; the last few changes.
    #[serde(default)]
    pub firmware_history: Vec<(i64, String)>,
    /// Under a review budget: critical events (trip id, bin) waiting for their trip's summary,
    /// which decides whether the trip is reviewed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaiting_review: Vec<(String, i64)>,
    /// With a review service: trips whose review was requested and is not answered yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_reviews: Vec<PendingReview>,
    /// Only where the engine publishes the group view (`Engine::with_group_view`): the latest
    /// trips and critical events accepted, by their times, latest last (at most
    /// [`VehicleMeta::RECENT`] each), for the other processes' pages of this vehicle. Without
    /// the group view none are kept: a page reads them from the facts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_trips: Vec<RecentRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_critical: Vec<RecentRecord>,
}

/// A trip or critical event, as a vehicle's page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RecentRecord {
    /// The trip's id (a critical event's trip).
    pub trip_id: String,
    /// A trip's end, an event's time.
    pub time_ms: i64,
    /// A trip's duration; an event's type and severity.
    pub detail: String,
}

impl RecentRecord {
    /// What a page lists of a trip (a record of it), or of a critical event at `time_ms`.
    pub fn of(payload: &Payload<'_>, time_ms: i64) -> Option<(bool, RecentRecord)> {
        match payload {
            Payload::Trip(t) => Some((
                true,
                RecentRecord {
                    trip_id: t.trip_id.to_string(),
                    time_ms: t.end_time_ms,
                    detail: format!("{:.0} min, {:.1} km", t.duration_s / 60.0, t.distance_km),
                },
            )),
            Payload::Safety(e) if e.is_critical() => Some((
                false,
                RecentRecord {
                    trip_id: e.trip_id.to_string(),
                    time_ms,
                    detail: format!("{:?}, {:?} severity", e.event_type, e.severity),
                },
            )),
            _ => None,
        }
    }
}

/// A review requested from the review service and not answered yet. Its trip's bins stay open
/// until the answer comes (or the review times out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PendingReview {
    pub trip_id: String,
    pub trip_start_ms: i64,
    pub trip_end_ms: i64,
    /// The trip's exposure scaled by its stratum's relative risk, added when the answer comes.
    pub risk_exposure_ms: u64,
    /// Horvitz-Thompson terms of its inclusion probability pi ([`BinStats::ht_terms`] with one
    /// event): each critical event's weight 1/pi, and (1 - pi)/pi^2, both in millionths.
    #[serde(default)]
    pub ht_weight_micro: u64,
    #[serde(default)]
    pub ht_variance_unit_micro: u64,
}

impl VehicleMeta {
    /// Firmware changes remembered per vehicle.
    pub const FIRMWARE_HISTORY: usize = 8;

    /// Trips and critical events a page lists, each.
    pub const RECENT: usize = 10;

    /// What an accepted record tells of its vehicle's attributes: a trip its model and
    /// firmware.
    pub fn note_record(&mut self, payload: &Payload<'_>) {
        if let Payload::Trip(t) = payload {
            self.observe_firmware(&t.firmware_version, t.start_time_ms);
            if self.vehicle_model != t.vehicle_model {
                self.vehicle_model = t.vehicle_model.to_string();
            }
        }
    }

    /// Keeps an accepted record at record time `time_ms` among the latest trips or critical
    /// events (group view only: see [`VehicleMeta::recent_trips`]).
    pub fn note_recent_record(&mut self, payload: &Payload<'_>, time_ms: i64) {
        if let Some((trip, record)) = RecentRecord::of(payload, time_ms) {
            let list = if trip {
                &mut self.recent_trips
            } else {
                &mut self.recent_critical
            };
            Self::note_recent(list, record);
        }
    }

    /// Keeps `record` among the latest of `list` (by time, then trip id; oldest first, at most
    /// [`Self::RECENT`]).
    pub fn note_recent(list: &mut Vec<RecentRecord>, record: RecentRecord) {
        let at =
            list.partition_point(|r| (r.time_ms, &r.trip_id) <= (record.time_ms, &record.trip_id));
        if at == 0 && list.len() >= Self::RECENT {
            return;
        }
        list.insert(at, record);
        if list.len() > Self::RECENT {
            list.remove(0);
        }
    }

    /// Records the firmware of a trip that started at `since_ms`.
    pub fn observe_firmware(&mut self, firmware: &str, since_ms: i64) {
        if self.firmware_version != firmware {
            self.firmware_version = firmware.to_string();
            self.firmware_history.push((since_ms, firmware.to_string()));
            if self.firmware_history.len() > Self::FIRMWARE_HISTORY {
                self.firmware_history.remove(0);
            }
        }
    }
}

impl VehicleState {
    /// Adds `stats` to bin `bin`: the one place a vehicle's bins change, marking the bin for
    /// the next commit. `true`: the vehicle's first change since the last commit (the caller
    /// notes the vehicle in the commit outbox).
    /// Its series of `class`, once its first bin has closed.
    pub fn series_of(&self, class: crate::model::HazardClass) -> Option<&super::series::Series> {
        self.series.as_deref().map(|series| &series[class])
    }

    /// How many of its series have an episode open.
    pub fn open_episodes(&self) -> usize {
        self.series
            .iter()
            .flat_map(|series| series.values())
            .filter(|s| s.episode.open.is_some())
            .count()
    }

    pub fn add(&mut self, bin: i64, stats: &BinStats) -> bool {
        self.bins.entry_or_default(bin).add(stats);
        self.touch(bin)
    }

    /// Marks bin `bin` for the next commit (it, or the vehicle's attributes, changed); `true`
    /// as for [`VehicleState::add`].
    pub fn touch(&mut self, bin: i64) -> bool {
        let first = self.dirty_bins.is_empty();
        self.dirty_bins.insert(bin);
        first
    }

    /// Keeps an accepted record under the bin of its record time: its bytes as a fact (local,
    /// for the warehouse) and what it adds to the refit's timeline (logged: a few bytes).
    pub fn keep_facts(
        &mut self,
        bin: i64,
        offset: i64,
        payload: &[u8],
        event: &TelemetryEvent<'_>,
    ) {
        self.pending_facts.push(bin, offset, payload);
        // Most records (safety events, mode changes) have no item: nothing is allocated.
        let mut encoded = Vec::new();
        for item in TimelineItem::of(event) {
            encoded.clear();
            item.encode(bin, &mut encoded);
            self.pending_timeline.push(bin, offset, &encoded);
        }
    }

    /// Everything the vehicle did: the bins kept (in memory and in the store) and those
    /// retired.
    pub fn totals(&self) -> BinStats {
        let mut total = self.retired;
        total.add(&self.stored.sum);
        for stats in self.bins.values() {
            total.add(stats);
        }
        total
    }
}

/// Accepted records' bytes, length-prefixed and concatenated: one RocksDB value per vehicle and
/// commit instead of one per record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FactBuffer {
    /// Source offset of the first record in the buffer (the segment's key).
    pub first_offset: i64,
    pub bytes: Vec<u8>,
}

impl FactBuffer {
    pub fn push(&mut self, offset: i64, record: &[u8]) {
        if self.bytes.is_empty() {
            self.first_offset = offset;
            // The length prefix (a varint) and the record, in one allocation.
            self.bytes.reserve(record.len() + 10);
        }
        crate::codec::write_long(record.len() as i64, &mut self.bytes);
        self.bytes.extend_from_slice(record);
    }
}

/// Records accepted since the last commit, one buffer per bin of their record time (almost
/// always one or two), so that a fact segment leaves the state with its bin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PendingFacts(pub Vec<(i64, FactBuffer)>);

impl PendingFacts {
    /// The buffers as segments of `vehicle_id` on `partition`, split for the changelog
    /// ([`MAX_SEGMENT_BYTES`]), each with its bin and first offset.
    pub fn into_segments(
        self,
        partition: crate::partition_id::PartitionId,
        vehicle_id: &str,
    ) -> Vec<FactSegment> {
        let mut segments = Vec::new();
        self.move_segments(partition, vehicle_id, &mut segments);
        segments
    }

    /// [`PendingFacts::into_segments`] appended to `out` (a commit's list: no list of its own).
    pub fn move_segments(
        self,
        partition: crate::partition_id::PartitionId,
        vehicle_id: &str,
        out: &mut Vec<FactSegment>,
    ) {
        for (bin_ms, buffer) in self.0 {
            let segment = FactSegment {
                partition,
                bin_ms,
                vehicle_id: vehicle_id.to_string(),
                first_offset: buffer.first_offset,
                records: buffer.bytes,
            };
            if segment.records.len() <= MAX_SEGMENT_BYTES {
                out.push(segment);
            } else {
                out.extend(segment.split(MAX_SEGMENT_BYTES));
            }
        }
    }

    pub fn push(&mut self, bin: i64, offset: i64, record: &[u8]) {
        let at = match self.0.iter().position(|(b, _)| *b == bin) {
            Some(at) => at,
            None => {
                self.0.push((bin, FactBuffer::default()));
                self.0.len() - 1
            }
        };
        self.0[at].1.push(offset, record);
    }
}

/// The records of a fact segment in the order they were accepted; `None` marks a damaged segment.
pub fn fact_records(segment: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let mut reader = crate::codec::Reader::new(segment);
    let mut damaged = false;
    std::iter::from_fn(move || {
        if damaged || reader.position() >= segment.len() {
            return None;
        }
        let record = reader.bytes().ok();
        damaged = record.is_none();
        Some(record)
    })
}

/// A partition's position in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionState {
    /// Offset of the next record to read.
    pub next_offset: i64,
    /// The latest record time a quorum of the partition's vehicles reached
    /// (admission; `i64::MIN` before the first record). Never goes back.
    pub watermark_ms: i64,
    /// The latest record time of each of the partition's vehicles, which the watermark follows.
    /// Derived from the vehicles' meta (rebuilt on restore).
    pub clocks: super::clocks::VehicleClocks,
    /// Hashes of record ids accepted recently, with their record times: an id counts as seen
    /// while its time is within the lateness window of the watermark.
    pub seen: HashMap<u64, i64, IdHashBuilder>,
    /// Ids with record times below this were forgotten at the last commit (they no longer
    /// counted).
    pub seen_cutoff_ms: i64,
    /// (record time, id hash) accepted since the last commit.
    pub pending_seen: Vec<(i64, u64)>,
    /// Offset of the first record since the last commit, if any.
    pub interval_first_offset: Option<i64>,
    /// Bins before this are closed for the partition's vehicles (`i64::MIN`: none yet).
    pub closed_through_ms: i64,
    /// (trip start, vehicle id, trip id) of reviews awaited from the review service: no bin at
    /// or after the earliest start closes. Derived from the vehicles' `pending_reviews`.
    pub review_holds: BTreeSet<(i64, String, String)>,
    /// Under a review budget: the policy's scale, recalibrated trip by trip on this partition
    /// (0: no trip yet). Per partition, so that selection depends only on the partition's own
    /// records, not on how partitions interleave.
    pub sampling_scale: f64,
    /// Per class, the partition's vehicles' events and exposure over the closed bins: the fleet
    /// its vehicles are compared with. Derived from the bins (recomputed on restore).
    pub fleet_sums: FleetSums,
    /// The partition's vehicles keep no bin before this (retention; not stored: a
    /// restore starts at `i64::MIN` and the first commit retires again what is due).
    pub bins_horizon_ms: i64,
    /// The ledger of the facts, which stay local: per bin of record time, the offset of the
    /// first record kept under it. A rebuild of the facts from the input (where a partition's
    /// state came from its changelog) reads from the first offset of the bins it needs.
    pub fact_bins: BTreeMap<i64, i64>,
    /// Bins given a first offset since the last commit.
    pub new_fact_bins: Vec<i64>,
    /// Offsets of the records rejected since the last commit: the rest of the ledger (a
    /// rebuild skips them).
    pub pending_rejected: Vec<i64>,
}

impl PartitionState {
    /// Bins before this may close on the partition: those the watermark has passed by the
    /// allowed lateness, and none at or after the start of a trip whose review is awaited.
    pub fn closable_through(&self, width_ms: i64, lateness_ms: i64) -> i64 {
        let mut edge = self.watermark_ms.saturating_sub(lateness_ms);
        if let Some((start, _, _)) = self.review_holds.first() {
            edge = edge.min(*start);
        }
        edge.div_euclid(width_ms) * width_ms
    }

    /// Whether the partition may close a bin still open (never before it has a watermark).
    pub fn may_close(&self, width_ms: i64, lateness_ms: i64) -> bool {
        self.watermark_ms != i64::MIN
            && self.closable_through(width_ms, lateness_ms) > self.closed_through_ms
    }

    /// A fact segment from `first_offset` under `bin`: the bin's first offset if it had none.
    pub fn note_fact_bin(&mut self, bin: i64, first_offset: i64) {
        match self.fact_bins.entry(bin) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(first_offset);
                self.new_fact_bins.push(bin);
            }
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                // Within the commit that opened the bin, another vehicle's segment may start
                // earlier (later commits only start later).
                if first_offset < *entry.get() {
                    entry.insert(first_offset);
                }
            }
        }
    }

    /// Where a rebuild of the facts kept under bins from `bin` on starts reading the input:
    /// the least first offset of those bins (`None`: no fact kept there).
    pub fn facts_from(&self, bin: i64) -> Option<i64> {
        self.fact_bins.range(bin..).map(|(_, o)| *o).min()
    }
}

impl Default for PartitionState {
    /// Before the first record: offset 0, no watermark.
    fn default() -> Self {
        PartitionState {
            next_offset: 0,
            watermark_ms: i64::MIN,
            clocks: Default::default(),
            seen: HashMap::default(),
            seen_cutoff_ms: i64::MIN,
            pending_seen: Vec::new(),
            interval_first_offset: None,
            closed_through_ms: i64::MIN,
            review_holds: BTreeSet::new(),
            sampling_scale: 0.0,
            fleet_sums: Default::default(),
            bins_horizon_ms: i64::MIN,
            fact_bins: BTreeMap::new(),
            new_fact_bins: Vec::new(),
            pending_rejected: Vec::new(),
        }
    }
}

/// Facts of one vehicle accepted between two commits, for the nightly job.
#[derive(Debug, Clone, PartialEq)]
pub struct FactSegment {
    pub partition: crate::partition_id::PartitionId,
    /// The bin of its records' record times: the segment expires with it.
    pub bin_ms: i64,
    pub vehicle_id: String,
    pub first_offset: i64,
    /// Length-prefixed framed records (see [`fact_records`]).
    pub records: Vec<u8>,
}

pub use crate::config::MAX_SEGMENT_BYTES;

impl FactSegment {
    /// This segment as segments of at most `max_bytes` each (whole records; one record larger
    /// than that alone). Chunk `i` is keyed `first_offset + i`: unique, since a segment holds at
    /// least as many offsets as it has records, and in order.
    pub fn split(self, max_bytes: usize) -> Vec<FactSegment> {
        if self.records.len() <= max_bytes {
            return vec![self];
        }
        let mut chunks = Vec::new();
        let mut reader = crate::codec::Reader::new(&self.records);
        let mut start = 0;
        while reader.position() < self.records.len() {
            let before = reader.position();
            if reader.bytes().is_err() {
                break;
            }
            if reader.position() - start > max_bytes && before > start {
                chunks.push(start..before);
                start = before;
            }
        }
        chunks.push(start..self.records.len());
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, range)| FactSegment {
                partition: self.partition,
                bin_ms: self.bin_ms,
                vehicle_id: self.vehicle_id.clone(),
                first_offset: self.first_offset + i as i64,
                records: self.records[range].to_vec(),
            })
            .collect()
    }
}

impl SeenSegment {
    /// This segment as segments of at most `max_bytes` of entries (16 bytes each), keyed
    /// `first_offset + i` (unique, as for facts), each with its own largest time.
    pub fn split(self, max_bytes: usize) -> Vec<SeenSegment> {
        let per_chunk = (max_bytes / 16).max(1);
        if self.entries.len() <= per_chunk {
            return vec![self];
        }
        self.entries
            .chunks(per_chunk)
            .enumerate()
            .map(|(i, entries)| SeenSegment {
                partition: self.partition,
                first_offset: self.first_offset + i as i64,
                max_time_ms: entries.iter().map(|(t, _)| *t).max().expect("not empty"),
                entries: entries.to_vec(),
            })
            .collect()
    }
}

/// Record ids of one partition accepted between two commits.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenSegment {
    pub partition: crate::partition_id::PartitionId,
    pub first_offset: i64,
    /// Largest event time in the segment: once the cutoff passes it, the segment is dropped.
    pub max_time_ms: i64,
    /// (event time, id hash)
    pub entries: Vec<(i64, u64)>,
}

/// Where a partition stands at a commit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionPosition {
    pub partition: crate::partition_id::PartitionId,
    pub next_offset: i64,
    pub watermark_ms: i64,
    pub seen_cutoff_ms: i64,
    pub closed_through_ms: i64,
    /// The review policy's scale on this partition (0: none yet).
    pub sampling_scale: f64,
    /// Fact segments of bins before this have expired (retention; `i64::MIN`: none).
    pub facts_horizon_ms: i64,
    /// Rejected offsets before this no rebuild can need (the first offset of the bins kept).
    pub rejected_floor: i64,
}

/// A partition's vehicles' bins summed over the closed bins, split into the basis of the
/// fleet's mean and the rest. Like each key's own baseline, the fleet's mean is taken from bins
/// a recent rise (a firmware rollout) has not reached: those older than the guard window G, but
/// never fewer than the first G bins (so at bin t: bins [0, t] while t < G, then [0, G), then
/// [0, t - G) from t = 2G on). Integer sums, so that they do not depend on the order vehicles
/// are visited in; every count and exposure kept, so that a review budget set after a restore
/// reads them as the live engine did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSums {
    pub(crate) basis: BinStats,
    pub(crate) basis_bins: usize,
    /// Totals of the later bins, oldest first.
    pub(crate) recent: std::collections::VecDeque<BinStats>,
}

impl FleetSums {
    /// The sums as the store keeps them: the basis, its bin count, then the recent bins.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + BinStats::ENCODED_LEN * (1 + self.recent.len()));
        out.extend_from_slice(&(self.basis_bins as u64).to_le_bytes());
        out.extend_from_slice(&(self.recent.len() as u64).to_le_bytes());
        for stats in std::iter::once(&self.basis).chain(&self.recent) {
            out.extend_from_slice(&stats.encode());
        }
        out
    }

    /// The sums as the store keeps them: the basis's bin count, then the basis and the recent
    /// bins, each [`BinStats::encode_compact`] after its length (Avro's long and bytes), so
    /// that bins of fewer fields (written before some were added) still read.
    pub fn encode_compact(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 24 * (1 + self.recent.len()));
        crate::codec::write_long(self.basis_bins as i64, &mut out);
        for stats in std::iter::once(&self.basis).chain(&self.recent) {
            let bin = stats.encode_compact();
            crate::codec::write_long(bin.len() as i64, &mut out);
            out.extend_from_slice(&bin);
        }
        out
    }

    /// Reads [`FleetSums::encode_compact`]'s bytes; `None` if they are not such.
    pub fn decode_compact(bytes: &[u8]) -> Option<FleetSums> {
        let mut reader = crate::codec::Reader::new(bytes);
        let basis_bins = usize::try_from(reader.long().ok()?).ok()?;
        let mut bins = Vec::new();
        while reader.position() < bytes.len() {
            bins.push(BinStats::decode_compact(reader.bytes().ok()?)?);
        }
        let mut bins = bins.into_iter();
        Some(FleetSums {
            basis: bins.next()?,
            basis_bins,
            recent: bins.collect(),
        })
    }

    /// Reads [`FleetSums::encode`]'s bytes; `None` if they are not such.
    pub fn decode(bytes: &[u8]) -> Option<FleetSums> {
        let number = |at: usize| -> Option<usize> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?) as usize)
        };
        let (basis_bins, recent) = (number(0)?, number(8)?);
        // The bins' width, which is the width of their version.
        let bins = recent.checked_add(1)?;
        let body = bytes.len().checked_sub(16)?;
        let len = body / bins;
        if len * bins != body || !BinStats::is_fixed_width(len) {
            return None;
        }
        let mut all = bytes[16..].chunks_exact(len).map(BinStats::decode);
        Some(FleetSums {
            basis: all.next()??,
            basis_bins,
            recent: all.collect::<Option<_>>()?,
        })
    }

    /// Whether any bin was pushed.
    pub fn is_empty(&self) -> bool {
        self.basis_bins == 0 && self.recent.is_empty()
    }
}

/// Where a vehicle's retired bins are summed ([`VehicleState::retired`]), among its bins: before
/// every bin start.
pub const RETIRED_BIN: i64 = i64::MIN;

/// A vehicle's Gamma prior of its event rate per exposure hour, from a refit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prior {
    pub a0: f64,
    pub b0: f64,
    /// The model run it came from.
    pub run_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_encode_compactly_and_every_encoding_reads_back() {
        let typical = BinStats {
            trips: 3,
            exposure_ms: 7_200_000,
            safety_events: 2,
            critical: 1,
            mode_transitions: 4,
            risk_exposure_ms: 9_000_000,
            autonomous_exposure_ms: 3_600_000,
            expected_critical_micro: 41_234,
            ..BinStats::default()
        };
        let largest = BinStats {
            trips: u64::MAX,
            ht_variance_micro: u64::MAX - 1,
            ..typical
        };
        for stats in [BinStats::default(), typical, largest] {
            let compact = stats.encode_compact();
            assert!(!compact.len().is_multiple_of(8), "{} bytes", compact.len());
            assert_eq!(BinStats::decode(&compact), Some(stats));
            assert_eq!(
                BinStats::decode(&stats.encode()),
                Some(stats),
                "fixed width"
            );
        }
        // 27 bytes: four times fewer than the fixed 120.
        assert!(
            typical.encode_compact().len() <= 30,
            "a typical bin in a few bytes"
        );
        // Fifteen zero fields are fifteen bytes: no padding needed; sixteen would be refused.
        assert_eq!(BinStats::default().encode_compact().len(), 15);
        assert_eq!(BinStats::decode(&[0; 17]), None, "trailing bytes");
        assert_eq!(BinStats::decode(&[0x80; 15]), None, "cut short");
        // A padding byte is read only after sixteen bytes of fields...
        let mut padded = vec![0x81, 0x01];
        padded.extend([0; 14]);
        padded.push(0);
        assert_eq!(BinStats::decode(&padded).map(|b| b.trips), Some(129));
        // ...not after seventeen.
        let mut padded = vec![0x81, 0x81, 0x01];
        padded.extend([0; 14]);
        padded.push(0);
        assert_eq!(BinStats::decode(&padded), None, "padding only where due");
        // A bin written before the fleet-relative exposures: its exposure counts at risk 1.
        let v2: Vec<u8> = typical.encode()[..BinStats::ENCODED_LEN_V2].to_vec();
        let old = BinStats::decode(&v2).unwrap();
        assert_eq!(old.risk_exposure_ms, typical.exposure_ms);
    }

    #[test]
    fn segments_split_to_records_no_broker_refuses_and_lose_nothing() {
        // 5000 facts of 30..230 bytes: split at 4 KiB, whole records, in order, keys unique.
        let mut facts = FactBuffer::default();
        let records: Vec<Vec<u8>> = (0..5000u32)
            .map(|n| vec![(n % 251) as u8; 30 + (n as usize * 7) % 200])
            .collect();
        for (n, record) in records.iter().enumerate() {
            facts.push(1000 + n as i64, record);
        }
        let segment = FactSegment {
            partition: crate::engine::PartitionId::Source(2),
            bin_ms: 0,
            vehicle_id: "v".into(),
            first_offset: facts.first_offset,
            records: facts.bytes.clone(),
        };
        let chunks = segment.split(4096);
        assert!(chunks.len() > 100, "{}", chunks.len());
        assert!(chunks.iter().all(|c| c.records.len() <= 4096));
        let keys: Vec<i64> = chunks.iter().map(|c| c.first_offset).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]) && keys[0] == 1000);
        assert!(*keys.last().unwrap() < 1000 + records.len() as i64);
        let back: Vec<&[u8]> = chunks
            .iter()
            .flat_map(|c| fact_records(&c.records).map(Option::unwrap))
            .collect();
        assert_eq!(back, records.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // One record larger than the limit travels alone.
        let mut big = FactBuffer::default();
        big.push(7, &[1; 10]);
        big.push(8, &[2; 9000]);
        big.push(9, &[3; 10]);
        let segment = FactSegment {
            partition: crate::engine::PartitionId::Source(0),
            bin_ms: 0,
            vehicle_id: "v".into(),
            first_offset: 7,
            records: big.bytes,
        };
        let sizes: Vec<usize> = segment
            .split(4096)
            .iter()
            .map(|c| c.records.len())
            .collect();
        assert_eq!(sizes.len(), 3, "{sizes:?}");
        assert!(sizes[1] > 9000);

        // 100,000 seen ids (1.6 MB): chunks of at most 256 KiB with their own largest times.
        let entries: Vec<(i64, u64)> = (0..100_000).map(|n| (n * 3 % 7919, n as u64)).collect();
        let segment = SeenSegment {
            partition: crate::engine::PartitionId::Source(1),
            first_offset: 50,
            max_time_ms: 7918,
            entries: entries.clone(),
        };
        let chunks = segment.split(MAX_SEGMENT_BYTES);
        assert_eq!(chunks.len(), 100_000 * 16 / MAX_SEGMENT_BYTES + 1);
        for chunk in &chunks {
            assert!(chunk.entries.len() * 16 <= MAX_SEGMENT_BYTES);
            let max = chunk.entries.iter().map(|(t, _)| *t).max().unwrap();
            assert_eq!(chunk.max_time_ms, max);
        }
        let back: Vec<(i64, u64)> = chunks.into_iter().flat_map(|c| c.entries).collect();
        assert_eq!(back, entries);
    }
}
