//! Rebuilds a partition's facts and seen ids from the input topic where its state came from the
//! changelog ([`crate::engine::ledger`]).
//!
//! Facts (the accepted records' bytes, the warehouse's input) and seen ids stay in the store of
//! the process that accepted them: the changelog carries state, not input. It carries the facts' ledger
//! instead: per bin, the offset of the first record kept under it, and the offsets of the
//! records rejected. A process given a partition whose state it restored from the changelog reads
//! the input topic again from the first offset of the bins the warehouse has yet to write up to
//! the partition's committed offset (or from the bins of the ids that still count, if earlier),
//! skips the rejected records, and keeps the rest under the bin of their record time, as the
//! engine did: the same facts, without the input ever passing
//! through the changelog. The input topic must keep that long (the days since the warehouse
//! last wrote the partition, plus three); a record it no longer holds is reported, not invented.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::client_config;
use super::end_of_partition::EndOfPartition;
use crate::config::Config;
use crate::engine::PartitionId;
use crate::engine::PartitionState;
use crate::engine::ledger::{FactsRebuild, Wanted};
use crate::store::{Store, StoreError};

/// How long a rebuild may read before it gives up (it reads days of input, not history).
const REBUILD_DEADLINE: Duration = Duration::from_secs(600);
/// Rebuilt facts are written in batches of about this many bytes.
const BATCH_BYTES: usize = 8 << 20;
/// Facts of a day's rows can lie this far before the day (an event of a trip that ends in it,
/// or an event filed three days on because its trip never came), plus a day of margin.
const DAYS_BEFORE_A_DAY: i64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "rebuilding the facts of {topic} [{partition}] from offset {from} to {to}: reached {at} only after {waited:?}"
    )]
    Deadline {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        at: i64,
        waited: Duration,
    },
}

/// What a rebuild read.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Rebuilt {
    /// Facts kept again, and seen ids.
    pub facts: u64,
    pub ids: u64,
    /// Input records before the first one the topic still held: facts lost to its retention.
    pub missing: u64,
}

/// The bins whose facts a rebuild of `partition` needs: those the warehouse may still read
/// (from four days before the last day it wrote of both fact tables; every bin kept if it has
/// written none).
pub fn bins_needed_from(warehouse: &Path, partition: PartitionId) -> i64 {
    let Some(source) = partition.source() else {
        return i64::MIN;
    };
    match crate::warehouse::last_day_written(warehouse, source) {
        Some(day_ms) => day_ms - DAYS_BEFORE_A_DAY * 86_400_000,
        None => i64::MIN,
    }
}

/// Reads the input of `partition` from the first offset of its bins from `from_bin` on up to
/// its committed offset and keeps the accepted records as facts in `store`.
pub fn rebuild_facts(
    config: &Config,
    store: &Store,
    (topic, at): (&str, i32),
    partition: PartitionId,
    state: &PartitionState,
    from_bin: i64,
) -> Result<Rebuilt, RebuildError> {
    let width = config.stream.bin_width_s * 1000;
    let Some(wanted) = Wanted::of(state, from_bin, width) else {
        return Ok(Rebuilt::default());
    };
    let (from, end) = (wanted.from(), wanted.end);
    let started = Instant::now();
    let rejected: BTreeSet<i64> = store.rejected_offsets(partition, from)?;
    let end_seen = EndOfPartition::default();
    let at_end: Arc<AtomicBool> = Arc::clone(&end_seen.0);
    let consumer: BaseConsumer<EndOfPartition> = client_config(
        config,
        &[],
        &[
            ("group.id", "safetel-facts-rebuild"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
        ],
    )
    .create_with_context(end_seen)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, at, Offset::Offset(from))?;
    consumer.assign(&assignment)?;

    let mut rebuild = FactsRebuild::new(partition, width, wanted, rejected);
    let mut outcome = Rebuilt::default();
    let mut next = from;
    // The end of the partition shows as an event of its own, which may overtake records still
    // queued: once it is seen, reading goes on until nothing comes for 200 ms. (Offsets below
    // the committed one that never come are transaction markers or aborted records.)
    let mut quiet_since: Option<Instant> = None;
    while next < end {
        if started.elapsed() > REBUILD_DEADLINE {
            return Err(RebuildError::Deadline {
                topic: topic.to_string(),
                partition: at,
                from,
                to: end,
                at: next,
                waited: REBUILD_DEADLINE,
            });
        }
        if quiet_since.is_none() && at_end.load(Ordering::Relaxed) {
            quiet_since = Some(Instant::now());
        }
        if quiet_since.is_some_and(|since| since.elapsed() > Duration::from_millis(200)) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(20)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(_)) => {
                quiet_since.get_or_insert_with(Instant::now);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if quiet_since.is_some() {
            quiet_since = Some(Instant::now());
        }
        let offset = message.offset();
        if offset < next {
            continue;
        }
        if next == from && offset > from {
            // The topic no longer holds the first records (its retention took them).
            outcome.missing = (offset.min(end) - from) as u64;
        }
        next = offset + 1;
        rebuild.offer(offset, message.payload().unwrap_or(&[]));
        if rebuild.buffered_bytes() > BATCH_BYTES {
            store.put_facts(&rebuild.take_segments(), &rebuild.take_seen())?;
        }
    }
    store.put_facts(&rebuild.take_segments(), &rebuild.take_seen())?;
    outcome.facts = rebuild.kept;
    outcome.ids = rebuild.ids_kept;
    outcome.missing += rebuild.unreadable;
    if outcome.missing > 0 {
        warn!(
            topic,
            partition = at,
            from,
            records = outcome.missing,
            "the input topic no longer holds records whose facts the warehouse has yet to write: those days will lack them (keep the input topic longer than the warehouse's lag plus four days)"
        );
    }
    info!(
        topic,
        partition = at,
        from,
        to = end,
        facts = outcome.facts,
        seen_ids = outcome.ids,
        read_s = format!("{:.2}", started.elapsed().as_secs_f64()),
        "facts rebuilt from the input topic"
    );
    Ok(outcome)
}
