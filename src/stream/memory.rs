//! In-process source and sink for `demo`, experiments, tests and benchmarks: records from an
//! iterator (the generator), spread over partitions by key as a Kafka producer spreads them;
//! dead letters kept and alerts in memory.

use std::collections::HashMap;
use std::time::Duration;

use super::runner::{DeadLetterSink, OutputSink, Poll, RecordSource, SinkError, SourceError};
use crate::dead_letter::Rejection;
use crate::engine::admission::SourceRecord;
use crate::model::{RegressionAlert, ReviewRequest};
use crate::partition_id::PartitionId;

/// Records handed to the engine per poll.
const BATCH: usize = 4096;

/// The partition a key maps to: CRC-32 of the key modulo the partition count, as librdkafka's
/// default partitioner (`consistent_random`) places keyed records. Each partition compares its
/// vehicles with the fleet of that partition, so an in-process run equals `run` on the same
/// topic only if its vehicles are partitioned alike.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (crc32(key) % partitions.max(1) as u32) as i32
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's), bit by bit: keys are short.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// One record for a [`MemorySource`]: its key, bytes and, where known, its Kafka timestamp.
#[derive(Debug, Clone)]
pub struct MemoryRecord {
    pub key: String,
    pub bytes: Vec<u8>,
    pub timestamp_ms: Option<i64>,
}

impl From<(String, Vec<u8>)> for MemoryRecord {
    /// A record without a timestamp: its times are checked against none.
    fn from((key, bytes): (String, Vec<u8>)) -> MemoryRecord {
        MemoryRecord {
            key,
            bytes,
            timestamp_ms: None,
        }
    }
}

impl From<crate::generator::GeneratedRecord> for MemoryRecord {
    /// A generated record, stamped with the time the simulated fleet produced it.
    fn from(record: crate::generator::GeneratedRecord) -> MemoryRecord {
        MemoryRecord {
            key: record.key,
            bytes: record.bytes,
            timestamp_ms: Some(record.produced_ms),
        }
    }
}

/// A bounded source over records (`(key, bytes)`, or [`MemoryRecord`]s with timestamps),
/// assigning partitions and offsets.
pub struct MemorySource<I> {
    records: I,
    partitions: i32,
    next_offsets: HashMap<i32, i64>,
    /// Records of each partition to skip: already reflected in restored state.
    skip_before: HashMap<PartitionId, i64>,
}

impl<I: Iterator<Item: Into<MemoryRecord>>> MemorySource<I> {
    pub fn new(records: I, partitions: i32) -> Self {
        MemorySource {
            records,
            partitions,
            next_offsets: HashMap::new(),
            skip_before: HashMap::new(),
        }
    }

    /// Resumes after a restart: records below these offsets were already processed.
    pub fn resume_from(mut self, positions: HashMap<PartitionId, i64>) -> Self {
        self.skip_before = positions;
        self
    }
}

impl<I: Iterator<Item: Into<MemoryRecord>>> RecordSource for MemorySource<I> {
    /// The generator's produce times are simulated: no latency is measured from them.
    fn timestamps_are_wall_clock(&self) -> bool {
        false
    }

    fn poll(
        &mut self,
        _max_wait: Duration,
        handle: &mut dyn FnMut(&SourceRecord<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<Poll, SourceError> {
        let mut count = 0;
        while count < BATCH {
            let Some(MemoryRecord {
                key,
                bytes,
                timestamp_ms,
            }) = self.records.next().map(Into::into)
            else {
                return Ok(if count == 0 {
                    Poll::End
                } else {
                    Poll::Records(count)
                });
            };
            let number = partition_for(key.as_bytes(), self.partitions);
            let offset = self.next_offsets.entry(number).or_insert(0);
            let this = *offset;
            *offset += 1;
            let partition = PartitionId::Source(number);
            if this < self.skip_before.get(&partition).copied().unwrap_or(0) {
                continue;
            }
            let flow = handle(&SourceRecord {
                partition,
                offset: this,
                key: Some(key.as_bytes()),
                payload: &bytes,
                timestamp_ms,
            });
            count += 1;
            if flow.is_break() {
                break;
            }
        }
        Ok(Poll::Records(count))
    }
}

/// A dead letter kept in memory.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub partition: PartitionId,
    pub offset: i64,
    pub reason: &'static str,
    pub error: String,
    pub bytes: Vec<u8>,
}

/// Dead letters in a vector.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    pub records: Vec<DeadLetter>,
}

impl DeadLetterSink for MemoryDeadLetters {
    fn send(&mut self, record: &SourceRecord<'_>, rejection: &Rejection) -> Result<(), SinkError> {
        self.records.push(DeadLetter {
            partition: record.partition,
            offset: record.offset,
            reason: rejection.reason(),
            error: rejection.to_string(),
            bytes: record.payload.to_vec(),
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Dead letters counted by reason, nothing kept: what `demo` reports, in memory that does not
/// grow with the stream.
#[derive(Debug, Default)]
pub struct DeadLetterCounts {
    pub by_reason: std::collections::BTreeMap<&'static str, u64>,
}

impl DeadLetterSink for DeadLetterCounts {
    fn send(&mut self, _: &SourceRecord<'_>, rejection: &Rejection) -> Result<(), SinkError> {
        *self.by_reason.entry(rejection.reason()).or_default() += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Alerts and review requests in vectors, in the order published.
#[derive(Debug, Default)]
pub struct MemoryOutputs {
    pub alerts: Vec<RegressionAlert>,
    pub review_requests: Vec<ReviewRequest>,
}

impl OutputSink for MemoryOutputs {
    fn alert(&mut self, alert: &RegressionAlert) -> Result<(), SinkError> {
        self.alerts.push(alert.clone());
        Ok(())
    }

    fn review_request(&mut self, request: &ReviewRequest) -> Result<(), SinkError> {
        self.review_requests.push(request.clone());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Runs `records` (key, bytes, or [`MemoryRecord`]s) through `engine` in process, spread over
/// `partitions` like a keyed topic, committing to `target` at most every `max_records`: what
/// `demo`, `experiment` and the tests do. Returns the dead letters and the alerts.
pub fn run_in_memory(
    engine: &mut crate::engine::Engine,
    records: impl Iterator<Item: Into<MemoryRecord>>,
    partitions: i32,
    target: &mut dyn super::runner::CommitTarget,
    max_records: usize,
) -> Result<(MemoryDeadLetters, MemoryOutputs), super::runner::RunError> {
    let (mut dlq, mut alerts) = (MemoryDeadLetters::default(), MemoryOutputs::default());
    super::runner::run(
        engine,
        &mut MemorySource::new(records, partitions),
        super::runner::Sinks {
            dead_letters: &mut dlq,
            outputs: &mut alerts,
        },
        target,
        super::runner::CommitPolicy {
            interval: Duration::from_secs(3600),
            max_records,
        },
        &std::sync::atomic::AtomicBool::new(false),
        &super::runner::StatusBoard::default(),
    )?;
    Ok((dlq, alerts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_where_librdkafkas_default_partitioner_puts_them() {
        // CRC-32 check value of "123456789" (zlib, librdkafka's rd_crc32) and the partitions it
        // gives.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(partition_for(b"123456789", 4), (0xCBF4_3926u32 % 4) as i32);
        assert_eq!(partition_for(b"veh-00001", 1), 0);
    }
}
