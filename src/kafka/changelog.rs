//! State commits through Kafka: each commit is one Kafka transaction holding every change as a
//! record of its partition's compacted changelog, the cohort reports for the repartition topic
//! and the consumer group's offsets; only once it is committed does the same change go to
//! RocksDB. A partition given to this process is restored from its changelog.
//!
//! So the changelog always holds a committed state with the offsets it reflects, whichever
//! process wrote it: a partition can move to another process at any time (a rebalance, a crash)
//! and resume exactly. A process that stalled and lost its partitions (a zombie) cannot commit
//! for them any more: the group's offsets in the transaction carry its stale generation, and
//! the coordinator refuses them.
//!
//! Changelog records: key = the column family's code (one byte) + the RocksDB key (which starts
//! with the partition number); value = the RocksDB value, empty for a delete. Source partition
//! `p` logs to partition `p` of `<group_id>.state-changelog`, cohort aggregator `q` to partition
//! `q` of `<group_id>.cohort-changelog`. Alerts and refit priors are not logged: alerts are a
//! record of what was published (the regressions topic is the log), priors come from each
//! process's refit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::client_config;
use super::end_of_partition::EndOfPartition;
use super::facts_rebuild::{self, RebuildError};
use crate::config::Config;
use crate::engine::view::{PartitionStamp, ViewItem};
use crate::engine::{PartitionId, RestoredState, StateDelta};
use crate::store::{Op, Store};
use crate::stream::runner::{CommitError, CommitTarget};

/// How long one transactional call may block before it is retried or given up.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading a changelog partition may take to reach its end.
const RESTORE_DEADLINE: Duration = Duration::from_secs(120);
/// How long a commit keeps retrying through a broker outage before the run fails.
const COMMIT_DEADLINE: Duration = Duration::from_secs(300);

/// The consumer's group membership, for the offsets committed in each transaction; set by the
/// source at each assignment.
pub type GroupMembership = Arc<Mutex<Option<ConsumerGroupMetadata>>>;

/// What the producer's deliveries said: the offset of each delivered record, per (topic,
/// partition), and a record the broker refused for good (too large: no retry can help).
#[derive(Default)]
pub struct Deliveries {
    offsets: HashMap<(String, i32), i64>,
    refused: Option<KafkaError>,
}

/// Records deliveries into [`Deliveries`].
pub struct DeliveredOffsets(Arc<Mutex<Deliveries>>);

impl ClientContext for DeliveredOffsets {}

impl ProducerContext for DeliveredOffsets {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Ok(mut deliveries) = self.0.lock() else {
            return;
        };
        match result {
            Ok(message) => {
                let at = deliveries
                    .offsets
                    .entry((message.topic().to_string(), message.partition()))
                    .or_insert(-1);
                *at = (*at).max(message.offset());
            }
            Err((error, _)) if too_large(error) => deliveries.refused = Some(error.clone()),
            Err(_) => {}
        }
    }
}

/// Where an internal partition number's records and state live in Kafka.
#[derive(Debug, Clone)]
pub struct Topics {
    pub events: String,
    pub state_changelog: String,
    pub cohort_reports: String,
    pub cohort_changelog: String,
    pub group_view: String,
}

impl Topics {
    pub fn new(config: &Config) -> Topics {
        let k = &config.kafka;
        Topics {
            events: k.events_topic.clone(),
            state_changelog: k.state_changelog_topic(),
            cohort_reports: k.cohort_topic(),
            cohort_changelog: k.cohort_changelog_topic(),
            group_view: k.group_view_topic(),
        }
    }

    /// The input topic and partition behind an internal partition number.
    pub fn input(&self, partition: PartitionId) -> (&str, i32) {
        match partition {
            PartitionId::Cohort(q) => (&self.cohort_reports, q),
            PartitionId::Source(n) => (&self.events, n),
        }
    }

    /// The changelog topic and partition of an internal partition number.
    pub fn changelog(&self, partition: PartitionId) -> (&str, i32) {
        match partition {
            PartitionId::Cohort(q) => (&self.cohort_changelog, q),
            PartitionId::Source(n) => (&self.state_changelog, n),
        }
    }

    /// The internal partition number of a partition of the events or repartition topic.
    pub fn internal(&self, topic: &str, partition: i32) -> PartitionId {
        if topic == self.cohort_reports {
            PartitionId::Cohort(partition)
        } else {
            PartitionId::Source(partition)
        }
    }

    /// The internal partition number whose changelog this is.
    fn partition_logged_at(&self, topic: &str, partition: i32) -> PartitionId {
        if topic == self.cohort_changelog {
            PartitionId::Cohort(partition)
        } else {
            PartitionId::Source(partition)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("state store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    #[error("changelog record at {topic}/{partition}@{offset} has no readable key")]
    Unreadable {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error(
        "the changelog topic `{0}` does not exist: run `safetel topics create` with this configuration (internal topics are named after kafka.group_id)"
    )]
    MissingTopic(String),
    #[error("changelog {topic}/{partition}: its end not reached within {waited:?}")]
    NoEnd {
        topic: String,
        partition: i32,
        waited: Duration,
    },
    #[error(
        "another producer with transactional id `{0}` took over (is kafka.transactional_id unique per process?): {1}"
    )]
    Fenced(String, KafkaError),
    #[error(
        "the group no longer counts this process a member (a pause past session.timeout.ms?); the transaction is aborted: {0}"
    )]
    GroupMoved(KafkaError),
    #[error("the transaction did not commit within {0:?}: {1}")]
    Deadline(Duration, KafkaError),
    #[error(
        "the broker refused a state record as too large ({0}): changelog records are at most 256 KiB plus their key, so the broker's message.max.bytes (and the changelog topics' max.message.bytes) must be above 300 kB, and the producers' message.max.bytes in [kafka.properties] no higher than the broker's"
    )]
    TooLarge(KafkaError),
}

/// The commit target of `run`: RocksDB behind a changelog.
pub struct ChangelogStore {
    store: Arc<Store>,
    config: Config,
    topics: Topics,
    transactional_id: String,
    producer: ThreadedProducer<DeliveredOffsets>,
    delivered: Arc<Mutex<Deliveries>>,
    group: GroupMembership,
    initialised: bool,
    metrics: crate::metrics::Metrics,
    /// Who commits, as the group view's partition stamps name it: the transactional id and
    /// the HTTP address.
    member: String,
}

impl ChangelogStore {
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        group: GroupMembership,
        metrics: crate::metrics::Metrics,
    ) -> Result<ChangelogStore, KafkaError> {
        let transactional_id = config
            .kafka
            .transactional_id
            .clone()
            .unwrap_or_else(|| default_transactional_id(config));
        let delivered = Arc::new(Mutex::new(Deliveries::default()));
        let producer = transactional_producer(config, &transactional_id, &delivered)?;
        info!(%transactional_id, "state commits go through the changelog");
        let member = format!("{transactional_id} ({})", config.http.listen);
        Ok(ChangelogStore {
            member,
            store,
            config: config.clone(),
            topics: Topics::new(config),
            transactional_id,
            producer,
            delivered,
            group,
            initialised: false,
            metrics,
        })
    }

    /// Sends one commit's records, offsets and commit marker; retries through broker outages
    /// (a retriable error redoes the call, an abortable one the whole transaction).
    fn transact(&mut self, ops: &[Op], delta: &StateDelta) -> Result<(), ChangelogError> {
        let deadline = Instant::now() + COMMIT_DEADLINE;
        loop {
            let outcome = self.try_transact(ops, delta, deadline);
            let failing = &self.metrics.commit_failing_since;
            match &outcome {
                Ok(()) => failing.set(0.0),
                Err(_) => {
                    self.metrics.commit_failures.inc();
                    if failing.get() == 0.0 {
                        failing.set(crate::stream::runner::unix_ms() as f64 / 1000.0);
                    }
                }
            }
            let refused = self.delivered.lock().expect("delivery lock").refused.take();
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if too_large(&e) || refused.is_some() => {
                    return Err(ChangelogError::TooLarge(refused.unwrap_or(e)));
                }
                Err(e) if fenced(&e) => {
                    return Err(ChangelogError::Fenced(self.transactional_id.clone(), e));
                }
                // The offsets were refused for the group's sake: no retry with this membership
                // can succeed. The transaction is aborted (its records never count) and the
                // run rejoins the group.
                Err(e) if not_a_member(&e) => {
                    warn!(error = %e, "state commit refused: the consumer group moved on without this process; aborting it");
                    if let Err(abort) = self.producer.abort_transaction(CALL_TIMEOUT) {
                        warn!(error = %abort, "abort failed; the next commit starts with a new producer");
                        self.renew_producer(abort)?;
                    }
                    // What the aborted transaction delivered is not state the store reflects.
                    self.delivered
                        .lock()
                        .expect("delivery lock")
                        .offsets
                        .clear();
                    self.metrics.commit_failing_since.set(0.0);
                    return Err(ChangelogError::GroupMoved(e));
                }
                Err(e) if requires_abort(&e) && Instant::now() < deadline => {
                    warn!(error = %e, "state commit transaction aborted; sending it again");
                    if let Err(e) = self.retrying(deadline, |p| p.abort_transaction(CALL_TIMEOUT)) {
                        self.renew_producer(e)?;
                    }
                }
                // Anything else (a broker back from an outage may leave the producer's
                // transaction in a state it cannot leave): a new producer with the same
                // transactional id aborts what the old one left open; the commit starts over.
                Err(e) if Instant::now() < deadline => self.renew_producer(e)?,
                Err(e) => return Err(ChangelogError::Deadline(COMMIT_DEADLINE, e)),
            }
        }
    }

    fn renew_producer(&mut self, cause: KafkaError) -> Result<(), ChangelogError> {
        warn!(error = %cause, "state commit failed; starting over with a new transactional producer");
        std::thread::sleep(Duration::from_secs(1));
        self.producer =
            transactional_producer(&self.config, &self.transactional_id, &self.delivered)?;
        self.initialised = false;
        Ok(())
    }

    /// Calls `call` until it succeeds, fails for good, or `deadline` passes: a broker outage
    /// makes the transactional calls time out with a retriable error.
    fn retrying(
        &self,
        deadline: Instant,
        call: impl Fn(&ThreadedProducer<DeliveredOffsets>) -> Result<(), KafkaError>,
    ) -> Result<(), KafkaError> {
        loop {
            match call(&self.producer) {
                Err(e) if retriable(&e) && Instant::now() < deadline => {
                    warn!(error = %e, "state commit waiting for the broker; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                outcome => return outcome,
            }
        }
    }

    fn try_transact(
        &mut self,
        ops: &[Op],
        delta: &StateDelta,
        deadline: Instant,
    ) -> Result<(), KafkaError> {
        if !self.initialised {
            self.retrying(deadline, |p| p.init_transactions(CALL_TIMEOUT))?;
            self.initialised = true;
        }
        self.producer.begin_transaction()?;
        let mut sent = SentBytes::default();
        for op in ops {
            let Some((partition, key, value)) = op.changelog_record() else {
                continue;
            };
            sent.add(op.cf, key.len() + value.map_or(0, <[u8]>::len));
            let (topic, at) = self.topics.changelog(partition);
            let record = BaseRecord::to(topic)
                .partition(at)
                .key(&key)
                .headers(format_header());
            let record = match value {
                Some(value) => record.payload(value),
                None => record,
            };
            self.send(record)?;
        }
        for (q, report) in &delta.cohort_reports {
            let value = serde_json::to_vec(report).expect("reports serialise");
            let key = report.source.to_string().into_bytes();
            let record = BaseRecord::to(&self.topics.cohort_reports)
                .partition(*q)
                .key(&key)
                .payload(&value[..]);
            sent.add("cohort-reports", key.len() + value.len());
            self.send(record)?;
        }
        let committed_at_ms = crate::stream::runner::unix_ms();
        for item in &delta.view {
            let stamped;
            let item = match item {
                ViewItem::Partition(stamp) => {
                    stamped = ViewItem::Partition(PartitionStamp {
                        member: self.member.clone(),
                        committed_at_ms,
                        ..stamp.clone()
                    });
                    &stamped
                }
                item => item,
            };
            for (key, value) in item.records() {
                let record = BaseRecord::to(&self.topics.group_view)
                    .partition(0)
                    .key(&key);
                sent.add("group-view", key.len() + value.as_ref().map_or(0, Vec::len));
                let record = match &value {
                    Some(value) => record.payload(&value[..]),
                    None => record,
                };
                self.send(record)?;
            }
        }
        if !delta.positions.is_empty() {
            let membership = self.group.lock().expect("group membership lock");
            if let Some(membership) = membership.as_ref() {
                let mut offsets = TopicPartitionList::new();
                for position in &delta.positions {
                    let (topic, partition) = self.topics.input(position.partition);
                    let next = Offset::Offset(position.next_offset);
                    offsets.add_partition_offset(topic, partition, next)?;
                }
                self.retrying(deadline, |p| {
                    p.send_offsets_to_transaction(&offsets, membership, CALL_TIMEOUT)
                })?;
            }
        }
        self.retrying(deadline, |p| p.commit_transaction(CALL_TIMEOUT))?;
        for (family, bytes) in sent.0 {
            self.metrics
                .changelog_bytes
                .with_label_values(&[family])
                .inc_by(bytes as u64);
        }
        Ok(())
    }

    fn send<'a>(&self, mut record: BaseRecord<'a, Vec<u8>, [u8]>) -> Result<(), KafkaError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The producer's own thread serves deliveries; wait for room.
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// The last changelog offset per internal partition delivered since the last call.
    fn take_delivered(&self) -> Vec<(PartitionId, i64)> {
        let mut delivered = self.delivered.lock().expect("delivery lock");
        delivered
            .offsets
            .drain()
            .filter(|((topic, _), _)| {
                *topic == self.topics.state_changelog || *topic == self.topics.cohort_changelog
            })
            .map(|((topic, partition), offset)| {
                (self.topics.partition_logged_at(&topic, partition), offset)
            })
            .collect()
    }

    fn commit_delta(&mut self, mut delta: StateDelta) -> Result<(), ChangelogError> {
        let ops = self.store.ops(&mut delta)?;
        let logged = ops.iter().any(|op| op.changelog_partition().is_some())
            || !delta.cohort_reports.is_empty()
            || !delta.view.is_empty();
        if logged {
            self.transact(&ops, &delta)?;
        }
        let offsets = self.take_delivered();
        drop(delta);
        self.store.apply(ops, &offsets)?;
        Ok(())
    }

    /// Brings each partition's local state up to its changelog: if the changelog holds records
    /// past the last offset this store reflects (another process moved the partition on, or
    /// this one crashed between the transaction and the store write), the partition's state is
    /// replaced by the changelog's.
    fn refresh(&self, partitions: &[PartitionId]) -> Result<(), ChangelogError> {
        let local = self.store.changelog_offsets()?;
        // First what came after the last offset this store reflects, all partitions at once...
        let after: Vec<(PartitionId, Offset)> = partitions
            .iter()
            .map(|p| {
                (
                    *p,
                    local
                        .get(p)
                        .map_or(Offset::Beginning, |o| Offset::Offset(o + 1)),
                )
            })
            .collect();
        let stale: Vec<(PartitionId, Offset)> = self
            .read_changelogs(&after)?
            .into_iter()
            .filter(|(_, ops, _)| !ops.is_empty())
            .map(|(p, _, _)| (p, Offset::Beginning))
            .collect();
        // ...then, where that was anything, the whole changelog of the partition.
        let started = Instant::now();
        let restored = self.read_changelogs(&stale)?;
        let read_s = started.elapsed().as_secs_f64();
        for (partition, ops, last) in restored {
            let (topic, at) = self.topics.changelog(partition);
            self.store.replace_partition(partition, &ops, last)?;
            if partition.is_source() {
                self.rebuild_facts(partition)?;
            }
            info!(
                topic,
                partition = at,
                records = ops.len(),
                bytes = ops
                    .iter()
                    .map(|op| op.key.len() + op.value.as_ref().map_or(0, Vec::len))
                    .sum::<usize>(),
                read_s = format!("{read_s:.2}"),
                "partition state restored from its changelog"
            );
            self.metrics.partitions_restored.inc();
            self.metrics
                .changelog_records_restored
                .inc_by(ops.len() as u64);
        }
        Ok(())
    }

    /// The facts of a partition whose state came from its changelog, from the input topic
    /// ([`super::facts_rebuild`]): those of the bins the warehouse may still read.
    fn rebuild_facts(&self, partition: PartitionId) -> Result<(), ChangelogError> {
        let restored = self.store.restore_partitions(&[partition])?;
        let Some(state) = restored.partitions.get(&partition) else {
            return Ok(());
        };
        let from_bin = facts_rebuild::bins_needed_from(&self.config.refit.warehouse_dir, partition);
        let rebuilt = facts_rebuild::rebuild_facts(
            &self.config,
            &self.store,
            self.topics.input(partition),
            partition,
            state,
            from_bin,
        )?;
        self.metrics.facts_rebuilt.inc_by(rebuilt.facts);
        self.metrics.facts_missing.inc_by(rebuilt.missing);
        Ok(())
    }

    /// Every committed change in each partition's changelog from its offset to the end, with
    /// the offset of the last record read; the partitions are read side by side.
    fn read_changelogs(
        &self,
        starts: &[(PartitionId, Offset)],
    ) -> Result<Vec<PartitionLog>, ChangelogError> {
        let mut readers = starts
            .iter()
            .map(|(partition, from)| ChangelogReader::new(self, *partition, *from))
            .collect::<Result<Vec<_>, _>>()?;
        while readers.iter().any(|r| !r.done) {
            for reader in readers.iter_mut().filter(|r| !r.done) {
                reader.poll()?;
            }
        }
        Ok(readers
            .into_iter()
            .map(|r| (r.partition, r.ops, r.last))
            .collect())
    }
}

/// What a changelog partition holds: (partition number, its changes in order, the offset of the
/// last record).
type PartitionLog = (PartitionId, Vec<Op>, Option<i64>);

/// Reads one changelog partition to its end (committed records only).
struct ChangelogReader {
    partition: PartitionId,
    topic: String,
    at: i32,
    consumer: BaseConsumer<EndOfPartition>,
    at_end: Arc<AtomicBool>,
    /// When the end was seen, or the last record after it.
    quiet_since: Option<Instant>,
    ops: Vec<Op>,
    last: Option<i64>,
    done: bool,
    started: Instant,
}

impl ChangelogReader {
    fn new(
        store: &ChangelogStore,
        partition: PartitionId,
        from: Offset,
    ) -> Result<ChangelogReader, ChangelogError> {
        let (topic, at) = store.topics.changelog(partition);
        let end = EndOfPartition::default();
        let at_end = Arc::clone(&end.0);
        let consumer: BaseConsumer<EndOfPartition> = client_config(
            &store.config,
            &[],
            &[
                ("group.id", "safetel-changelog-restore"),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
            ],
        )
        .create_with_context(end)?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, at, from)?;
        consumer.assign(&assignment)?;
        Ok(ChangelogReader {
            partition,
            topic: topic.to_string(),
            at,
            consumer,
            at_end,
            quiet_since: None,
            ops: Vec::new(),
            last: None,
            done: false,
            started: Instant::now(),
        })
    }

    /// Takes what has arrived. The end shows as an event of its own, which may overtake records
    /// still queued: once it is seen, the reader reads on until nothing comes for 200 ms.
    fn poll(&mut self) -> Result<(), ChangelogError> {
        if self.quiet_since.is_none() && self.at_end.load(Ordering::Relaxed) {
            self.quiet_since = Some(Instant::now());
        }
        if self.quiet_since.is_none() && self.started.elapsed() > RESTORE_DEADLINE {
            return Err(ChangelogError::NoEnd {
                topic: self.topic.clone(),
                partition: self.at,
                waited: RESTORE_DEADLINE,
            });
        }
        loop {
            match self.consumer.poll(Duration::from_millis(20)) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    self.at_end.store(true, Ordering::Relaxed)
                }
                Some(Err(e))
                    if e.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
                {
                    return Err(ChangelogError::MissingTopic(self.topic.clone()));
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(message)) => {
                    let format = record_format(message.headers());
                    let op = message
                        .key()
                        .zip(format)
                        .and_then(|(key, format)| {
                            Op::from_changelog(key, message.payload(), format)
                        })
                        .ok_or_else(|| ChangelogError::Unreadable {
                            topic: self.topic.clone(),
                            partition: self.at,
                            offset: message.offset(),
                        })?;
                    self.ops.push(op);
                    self.last = Some(message.offset());
                    if self.quiet_since.is_some() {
                        self.quiet_since = Some(Instant::now());
                    }
                }
            }
        }
        self.done = self
            .quiet_since
            .is_some_and(|since| since.elapsed() > Duration::from_millis(200));
        Ok(())
    }
}

/// The header a changelog record names its store format in ([`crate::store::codec::FORMAT`]).
const FORMAT_HEADER: &str = "safetel.store-format";

/// The header's value: the format as one ASCII digit (formats stay below ten).
const FORMAT_VALUE: [u8; 1] = [b'0' + crate::store::codec::FORMAT];

fn format_header() -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header {
        key: FORMAT_HEADER,
        value: Some(&FORMAT_VALUE[..]),
    })
}

/// The store format a changelog record was written in: 0 without the header (an earlier
/// safetel's), `None` if the header is not a number.
fn record_format(headers: Option<&rdkafka::message::BorrowedHeaders>) -> Option<u8> {
    let Some(header) = headers.and_then(|h| h.iter().find(|h| h.key == FORMAT_HEADER)) else {
        return Some(0);
    };
    std::str::from_utf8(header.value?).ok()?.parse().ok()
}

impl CommitTarget for ChangelogStore {
    fn commit(&mut self, delta: StateDelta) -> Result<(), CommitError> {
        Ok(self.commit_delta(delta)?)
    }

    fn load_partitions(
        &mut self,
        partitions: &[PartitionId],
    ) -> Result<RestoredState, CommitError> {
        self.refresh(partitions)?;
        Ok(self.store.restore_partitions(partitions)?)
    }
}

impl From<ChangelogError> for CommitError {
    /// The engine's view of a changelog failure: whether the run may go on is in the variant.
    fn from(error: ChangelogError) -> Self {
        match error {
            ChangelogError::GroupMoved(_) => CommitError::GroupMoved(error.to_string()),
            ChangelogError::Fenced(..) => CommitError::Fenced(error.to_string()),
            ChangelogError::Store(store) => CommitError::from(store),
            error => CommitError::Failed(error.to_string()),
        }
    }
}

/// Bytes one transaction sends, by column family (a handful: a list).
#[derive(Default)]
struct SentBytes(Vec<(&'static str, usize)>);

impl SentBytes {
    fn add(&mut self, family: &'static str, bytes: usize) {
        match self.0.iter_mut().find(|(f, _)| *f == family) {
            Some((_, sum)) => *sum += bytes,
            None => self.0.push((family, bytes)),
        }
    }
}

/// A producer for state commits; deliveries land in `delivered`.
fn transactional_producer(
    config: &Config,
    transactional_id: &str,
    delivered: &Arc<Mutex<Deliveries>>,
) -> Result<ThreadedProducer<DeliveredOffsets>, KafkaError> {
    client_config(
        config,
        &[
            ("linger.ms", "5"),
            ("transaction.timeout.ms", "10000"),
            // A commit sends thousands of small records per changelog partition, keyed by
            // partition and vehicle: LZ4 takes what the broker stores from 46 to 27 bytes per
            // input record (`run-peers`, BENCHMARKS.md, fleet scale).
            ("compression.type", "lz4"),
        ],
        &[
            ("transactional.id", transactional_id),
            ("enable.idempotence", "true"),
        ],
    )
    .create_with_context(DeliveredOffsets(Arc::clone(delivered)))
}

/// The broker (or the producer, on its behalf) refuses a record for its size.
fn too_large(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

/// Another producer with the same transactional id took over.
fn fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
    )
}

/// The group coordinator no longer takes this process's offsets: its member id or generation
/// is stale (it missed its session timeout, and the group rebalanced without it).
fn not_a_member(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::RebalanceInProgress
        )
    )
}

fn retriable(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(t) if t.is_retriable())
}

fn requires_abort(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(t) if t.txn_requires_abort())
}

/// `<group_id>-<host name>-<hash of the state directory>`: the same for a process's restarts,
/// different for two processes on one host.
fn default_transactional_id(config: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let dir = std::fs::canonicalize(&config.state.dir).unwrap_or_else(|_| config.state.dir.clone());
    let hash = crate::engine::id_hash(&[dir.to_string_lossy().as_bytes()]);
    format!("{}-{host}-{:08x}", config.kafka.group_id, hash as u32)
}
