//! The stream engine: one implementation for `run`, `demo` and the experiments.
//!
//! Owns the per-record path: size check, decode, validation, lateness against the partition's
//! watermark, duplicate check, then the state update (bins, facts). It never touches Kafka,
//! RocksDB or HTTP: records come in as [`SourceRecord`]s, rejected ones go out as [`Rejection`]s
//! for the caller to dead-letter, and changes leave as a [`StateDelta`] at each commit point.
//! [`runner`] drives it from a [`runner::RecordSource`]; [`memory`] is the in-process source and
//! dead-letter sink of `demo`, tests and benchmarks.

pub mod memory;
pub mod runner;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use crate::codec::{self, DecodeError};
use crate::config::StreamConfig;
use crate::metrics::Metrics;
use crate::model::{Payload, RecordKind, ValidationError, exposure_ms, validate};
pub use state::{
    BinStats, FactSegment, FnvHashBuilder, IdHashBuilder, PartitionPosition, PartitionState,
    SeenSegment, StateDelta, VehicleMeta, VehicleState, fact_records, id_hash,
};

/// One record as read from a source.
#[derive(Debug, Clone, Copy)]
pub struct SourceRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// When the record was produced (ms since epoch), if the source knows.
    pub timestamp_ms: Option<i64>,
}

/// Why a record did not update state. Each goes to the dead-letter topic with its reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("record is {len} bytes, more than the {max} allowed")]
    Oversized { len: usize, max: usize },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("invalid event: {0}")]
    Invalid(#[from] ValidationError),
    #[error(
        "event time {event_time_ms} is more than {allowed_lateness_ms} ms behind the watermark {watermark_ms}"
    )]
    Late {
        event_time_ms: i64,
        watermark_ms: i64,
        allowed_lateness_ms: i64,
    },
    #[error("duplicate of an earlier record with id `{id}`")]
    Duplicate { id: String },
}

impl Rejection {
    /// The short reason carried in the DLQ header `reason` and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Oversized { .. } => "oversized",
            Rejection::Decode(e) => e.reason(),
            Rejection::Invalid(_) => "invalid",
            Rejection::Late { .. } => "late",
            Rejection::Duplicate { .. } => "duplicate",
        }
    }

    pub const REASONS: [&'static str; 7] = [
        "oversized",
        "schema",
        "decode",
        "invalid",
        "late",
        "duplicate",
        "other",
    ];
}

/// Vehicle state by vehicle id, shared with the HTTP API (reads).
pub type Vehicles = DashMap<String, VehicleState, FnvHashBuilder>;

/// Per-record processing and the hot state it updates.
pub struct Engine {
    config: StreamConfig,
    bin_width_ms: i64,
    allowed_lateness_ms: i64,
    vehicles: Arc<Vehicles>,
    partitions: HashMap<i32, PartitionState>,
    pending: Pending,
    pub(crate) metrics: Metrics,
}

/// Changes since the last commit that are not visible in the state maps themselves.
#[derive(Default)]
struct Pending {
    dirty_vehicles: Vec<String>,
    moved_partitions: Vec<i32>,
    records: usize,
}

/// State restored from the store at start-up.
#[derive(Debug, Default)]
pub struct RestoredState {
    pub vehicles: Vec<(String, VehicleState)>,
    pub partitions: HashMap<i32, PartitionState>,
}

impl Engine {
    pub fn new(config: StreamConfig, restored: RestoredState, metrics: Metrics) -> Engine {
        let vehicles = Arc::new(Vehicles::default());
        for (id, state) in restored.vehicles {
            vehicles.insert(id, state);
        }
        metrics.vehicles.set(vehicles.len() as i64);
        Engine {
            bin_width_ms: config.bin_width_s * 1000,
            allowed_lateness_ms: config.allowed_lateness_s * 1000,
            config,
            vehicles,
            partitions: restored.partitions,
            pending: Pending::default(),
            metrics,
        }
    }

    /// Shared read access to vehicle state, for the HTTP API.
    pub fn vehicles(&self) -> Arc<Vehicles> {
        Arc::clone(&self.vehicles)
    }

    /// Next offset to read per partition, as of the records processed so far.
    pub fn positions(&self) -> HashMap<i32, i64> {
        self.partitions
            .iter()
            .map(|(p, s)| (*p, s.next_offset))
            .collect()
    }

    /// Records processed since the last commit point.
    pub fn pending_records(&self) -> usize {
        self.pending.records
    }

    /// Processes one record. `Err` means the record did not change state (apart from the
    /// partition's offset) and belongs in the dead-letter topic.
    pub fn process(&mut self, record: &SourceRecord<'_>) -> Result<RecordKind, Rejection> {
        self.metrics.records_received.inc();
        let result = self.apply(record);
        let partition = self.partitions.entry(record.partition).or_default();
        partition.next_offset = record.offset + 1;
        if partition.interval_first_offset.is_none() {
            partition.interval_first_offset = Some(record.offset);
            self.pending.moved_partitions.push(record.partition);
        }
        self.pending.records += 1;
        match &result {
            Ok(kind) => self.metrics.records_accepted(*kind).inc(),
            Err(rejection) => self.metrics.dlq_records(rejection.reason()).inc(),
        }
        result
    }

    fn apply(&mut self, record: &SourceRecord<'_>) -> Result<RecordKind, Rejection> {
        let max = self.config.max_record_bytes;
        if record.payload.len() > max {
            return Err(Rejection::Oversized {
                len: record.payload.len(),
                max,
            });
        }
        let event = codec::decode(record.payload)?;
        validate(&event)?;

        let partition = self.partitions.entry(record.partition).or_default();
        let time = event.event_time_ms;
        if partition.watermark_ms != i64::MIN
            && time < partition.watermark_ms - self.allowed_lateness_ms
        {
            return Err(Rejection::Late {
                event_time_ms: time,
                watermark_ms: partition.watermark_ms,
                allowed_lateness_ms: self.allowed_lateness_ms,
            });
        }
        let kind = event.kind();
        let hash = record_hash(kind, &event.vehicle_id, event.record_id());
        if partition.seen.insert(hash, time).is_some() {
            return Err(Rejection::Duplicate {
                id: event.record_id().to_string(),
            });
        }
        partition.watermark_ms = partition.watermark_ms.max(time);
        partition.pending_seen.push((time, hash));

        let (bin_time, delta) = match &event.payload {
            Payload::Trip(t) => {
                let stats = BinStats {
                    trips: 1,
                    exposure_ms: exposure_ms(t.duration_s),
                    ..BinStats::default()
                };
                (t.end_time_ms, stats)
            }
            Payload::Safety(e) => {
                let critical = u64::from(e.is_critical());
                (
                    time,
                    BinStats {
                        safety_events: 1,
                        critical,
                        ..BinStats::default()
                    },
                )
            }
            Payload::Mode(m) => {
                let disengagements = u64::from(m.is_disengagement());
                (
                    time,
                    BinStats {
                        mode_transitions: 1,
                        disengagements,
                        ..BinStats::default()
                    },
                )
            }
        };
        let bin = bin_time.div_euclid(self.bin_width_ms) * self.bin_width_ms;

        let vehicle_id: &str = &event.vehicle_id;
        let mut vehicle = match self.vehicles.get_mut(vehicle_id) {
            Some(v) => v,
            None => {
                self.vehicles.insert(
                    vehicle_id.to_string(),
                    VehicleState {
                        partition: record.partition,
                        ..VehicleState::default()
                    },
                );
                self.metrics.vehicles.inc();
                self.vehicles.get_mut(vehicle_id).expect("just inserted")
            }
        };
        vehicle.partition = record.partition;
        vehicle.bins.entry(bin).or_default().add(&delta);
        if vehicle.dirty_bins.is_empty() {
            self.pending.dirty_vehicles.push(vehicle_id.to_string());
        }
        vehicle.dirty_bins.insert(bin);
        let meta = &mut vehicle.meta;
        meta.last_event_time_ms = meta.last_event_time_ms.max(time);
        if let Payload::Trip(t) = &event.payload {
            if meta.firmware_version != t.firmware_version {
                meta.firmware_version = t.firmware_version.to_string();
            }
            if meta.vehicle_model != t.vehicle_model {
                meta.vehicle_model = t.vehicle_model.to_string();
            }
        }
        vehicle.pending_facts.push(record.offset, record.payload);
        Ok(kind)
    }

    /// Takes everything changed since the last call, and forgets record ids too old to matter.
    pub fn take_delta(&mut self) -> StateDelta {
        let pending = std::mem::take(&mut self.pending);
        let mut delta = StateDelta::default();
        for vehicle_id in pending.dirty_vehicles {
            let Some(mut vehicle) = self.vehicles.get_mut(&vehicle_id) else {
                continue;
            };
            let vehicle = &mut *vehicle;
            for bin in std::mem::take(&mut vehicle.dirty_bins) {
                delta.bins.push((
                    vehicle.partition,
                    vehicle_id.clone(),
                    bin,
                    vehicle.bins[&bin],
                ));
            }
            let facts = std::mem::take(&mut vehicle.pending_facts);
            delta.facts.push(FactSegment {
                partition: vehicle.partition,
                vehicle_id: vehicle_id.clone(),
                first_offset: facts.first_offset,
                records: facts.bytes,
            });
            delta
                .vehicles
                .push((vehicle.partition, vehicle_id, vehicle.meta.clone()));
        }
        for p in pending.moved_partitions {
            let state = self.partitions.get_mut(&p).expect("moved partitions exist");
            let first_offset = state
                .interval_first_offset
                .take()
                .expect("moved partitions have records");
            let entries = std::mem::take(&mut state.pending_seen);
            if let Some(max_time_ms) = entries.iter().map(|(t, _)| *t).max() {
                delta.seen.push(SeenSegment {
                    partition: p,
                    first_offset,
                    max_time_ms,
                    entries,
                });
            }
            if state.watermark_ms != i64::MIN {
                state.seen_cutoff_ms = state.watermark_ms.saturating_sub(self.allowed_lateness_ms);
                let cutoff = state.seen_cutoff_ms;
                state.seen.retain(|_, time| *time >= cutoff);
            }
            delta.positions.push(PartitionPosition {
                partition: p,
                next_offset: state.next_offset,
                watermark_ms: state.watermark_ms,
                seen_cutoff_ms: state.seen_cutoff_ms,
            });
        }
        delta
    }
}

/// The dedup key of a record: its kind, vehicle and id, hashed.
fn record_hash(kind: RecordKind, vehicle_id: &str, record_id: &str) -> u64 {
    id_hash(&[
        &[kind as u8],
        vehicle_id.as_bytes(),
        &[0],
        record_id.as_bytes(),
    ])
}

#[cfg(test)]
mod tests;
