//! `telemetry.events` and the cohort repartition topic as a [`RecordSource`]: a consumer-group
//! member that starts each assigned partition at the offset stored with its state.
//!
//! Rebalances are handed to the run loop rather than settled in librdkafka's callback: the
//! callback only notes what was assigned or revoked; the loop commits (before giving partitions
//! up) or restores state (before taking them) and then calls [`RecordSource::revoked`] or
//! [`RecordSource::assign`], which completes the rebalance (librdkafka waits for that call).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList as Tpl};
use tracing::{error, info, warn};

use super::changelog::{GroupMembership, Topics};
use super::client_config;
use crate::config::Config;
use crate::engine::admission::reference_timestamp;
use crate::engine::{PartitionId, SourceRecord};
use crate::metrics::Metrics;
use crate::stream::runner::{Lag, Poll, Rebalance, RecordSource, SourceError, SourceHealth};

/// Most records handed to the engine per poll.
const MAX_BATCH: usize = 4096;

/// Shared between the consumer's callbacks and the loop.
struct Shared {
    /// The source is being dropped: the loop has committed its last; the consumer's close
    /// settles its own final revocation.
    closing: AtomicBool,
    /// Rebalances noted by the callback, not yet handed to the loop.
    rebalances: Mutex<VecDeque<Rebalance>>,
    /// Latest high watermark per partition, from librdkafka's statistics.
    high_watermarks: Mutex<HashMap<PartitionId, i64>>,
    /// The errors the group or the consumer reported, until a record or an assignment.
    group_error: Mutex<ReportedErrors>,
    metrics: Metrics,
}

pub struct SourceContext {
    topic: String,
    topics: Topics,
    shared: Arc<Shared>,
}

impl SourceContext {
    /// The engine's partition behind a partition of the events or repartition topic.
    fn internal(&self, topic: &str, partition: i32) -> PartitionId {
        self.topics.internal(topic, partition)
    }
}

fn unix_now_s() -> f64 {
    crate::stream::runner::unix_ms() as f64 / 1000.0
}

/// What the consumer reported since it last made progress. A refusal (the broker rejected our
/// credentials, authorization or TLS) is what an operator must fix, so transient errors that
/// follow it (a dropped connection, all brokers down) do not hide it.
#[derive(Debug, Default, Clone, PartialEq)]
struct ReportedErrors {
    refusal: Option<String>,
    last: Option<String>,
}

impl ReportedErrors {
    fn note(&mut self, code: Option<RDKafkaErrorCode>, text: String) {
        if code.is_some_and(is_refusal) {
            self.refusal = Some(text);
        } else {
            self.last = Some(text);
        }
    }

    /// The refusal first, then the last other error.
    fn describe(&self) -> Option<String> {
        match (&self.refusal, &self.last) {
            (Some(refusal), Some(last)) => Some(format!("{refusal}; then {last}")),
            (Some(one), None) | (None, Some(one)) => Some(one.clone()),
            (None, None) => None,
        }
    }
}

/// Errors that retrying does not cure: the broker refuses who we are or what we ask.
fn is_refusal(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        Authentication
            | SaslAuthenticationFailed
            | SSL
            | UnsupportedSASLMechanism
            | IllegalSASLState
            | TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed
    )
}

impl Shared {
    fn note_error(&self, code: Option<RDKafkaErrorCode>, error: String) {
        if let Ok(mut reported) = self.group_error.lock() {
            reported.note(code, error);
        }
    }

    fn clear_error(&self) {
        if let Ok(mut reported) = self.group_error.lock() {
            *reported = ReportedErrors::default();
        }
    }

    /// No broker answers: noted once per outage (metrics, log); health reports the outage.
    fn all_brokers_down(&self, reason: &str) -> bool {
        if !self.metrics.source_lost_brokers(unix_now_s()) {
            return false;
        }
        error!(
            reason,
            "no broker reachable: consuming pauses, state and offsets stay as committed; health reports the outage until a broker answers"
        );
        true
    }

    /// A broker answered (a record arrived, or the statistics show one up): an outage is over.
    fn broker_reachable(&self) {
        if let Some(since) = self.metrics.source_reconnected() {
            info!(
                outage_s = format!("{:.1}", unix_now_s() - since),
                "broker reachable again; consuming resumes from the stored offsets"
            );
        }
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        // Brokers the client connects to (not its internal or logical placeholders).
        let up = statistics
            .brokers
            .values()
            .any(|b| matches!(b.source.as_str(), "learned" | "configured") && b.state == "UP");
        if up {
            self.shared.broker_reachable();
        }
        if let Some(topic) = statistics.topics.get(&self.topic)
            && let Ok(mut marks) = self.shared.high_watermarks.lock()
        {
            for (partition, stats) in &topic.partitions {
                if *partition >= 0 && stats.hi_offset >= 0 {
                    marks.insert(PartitionId::Source(*partition), stats.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.metrics.source_errors.inc();
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) && self.shared.all_brokers_down(reason) {
            return;
        }
        warn!(%error, reason, "kafka client error");
        self.shared.note_error(code, format!("{error}: {reason}"));
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<PartitionId> = tpl
            .elements()
            .iter()
            .map(|e| self.internal(e.topic(), e.partition()))
            .collect();
        if self.shared.closing.load(Ordering::Relaxed) {
            if let Err(e) = consumer.unassign() {
                warn!(error = %e, "unassign on close failed");
            }
            return;
        }
        let change = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.shared.clear_error();
                info!(
                    ?partitions,
                    "partitions assigned; restoring their state before consuming"
                );
                Rebalance::Assign(partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                info!(
                    ?partitions,
                    lost, "partitions revoked; committing before giving them up"
                );
                Rebalance::Revoke { partitions, lost }
            }
            other => {
                warn!(error = ?other, "rebalance error");
                self.shared
                    .note_error(None, format!("rebalance: {other:?}"));
                return;
            }
        };
        if let Ok(mut pending) = self.shared.rebalances.lock() {
            pending.push_back(change);
        }
    }
}

pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    topic: String,
    topics: Topics,
    shared: Arc<Shared>,
    group: GroupMembership,
    group_id: String,
    partition_count: Option<i32>,
    session_timeout: Duration,
    /// Input topics the cluster lacked at the last look, and when that was; `None` once all
    /// were found.
    missing: Mutex<Option<(Vec<String>, Option<std::time::Instant>)>>,
}

impl KafkaSource {
    /// Joins the consumer group and subscribes to the events and repartition topics.
    pub fn new(config: &Config, metrics: Metrics) -> Result<KafkaSource, KafkaError> {
        let topic = config.kafka.events_topic.clone();
        let topics = Topics::new(config);
        let shared = Arc::new(Shared {
            closing: AtomicBool::new(false),
            rebalances: Mutex::new(VecDeque::new()),
            high_watermarks: Mutex::new(HashMap::new()),
            group_error: Mutex::new(ReportedErrors::default()),
            metrics,
        });
        let context = SourceContext {
            topic: topic.clone(),
            topics: topics.clone(),
            shared: Arc::clone(&shared),
        };
        let defaults = [
            ("auto.offset.reset", "earliest"),
            ("statistics.interval.ms", "1000"),
            // librdkafka waits this long before fetching again once its local queue is full; the
            // default (1 s) leaves a consumer that does real work idle most of the time.
            ("fetch.queue.backoff.ms", "10"),
        ];
        let required = [
            ("group.id", config.kafka.group_id.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "false"),
            // Cohort reports are written in the state commits' transactions.
            ("isolation.level", "read_committed"),
        ];
        let consumer: BaseConsumer<SourceContext> =
            client_config(config, &defaults, &required).create_with_context(context)?;
        consumer.subscribe(&[&topic, &topics.cohort_reports])?;
        Ok(KafkaSource {
            consumer,
            group_id: config.kafka.group_id.clone(),
            topic,
            topics,
            shared,
            group: GroupMembership::default(),
            partition_count: None,
            session_timeout: Duration::from_millis(session_timeout_ms(config)),
            missing: Mutex::new(Some((Vec::new(), None))),
        })
    }

    /// Input topics the cluster does not have, looked up at most every 5 s until all exist.
    fn missing_topics(&self) -> Vec<String> {
        let Ok(mut missing) = self.missing.lock() else {
            return Vec::new();
        };
        let Some((known_missing, looked)) = missing.as_mut() else {
            return Vec::new();
        };
        if looked.is_some_and(|at| at.elapsed() < Duration::from_secs(5)) {
            return known_missing.clone();
        }
        *looked = Some(std::time::Instant::now());
        let mut now_missing = Vec::new();
        for topic in [&self.topic, &self.topics.cohort_reports] {
            match self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(2))
            {
                Ok(metadata) => {
                    let found = metadata.topics().iter().any(|t| {
                        t.name() == topic.as_str()
                            && t.error().is_none()
                            && !t.partitions().is_empty()
                    });
                    if !found {
                        now_missing.push(topic.clone());
                    }
                }
                // No broker to ask: what was known stays.
                Err(_) => return known_missing.clone(),
            }
        }
        if now_missing.is_empty() {
            *missing = None;
            return Vec::new();
        }
        if *known_missing != now_missing {
            warn!(topics = ?now_missing, "input topics do not exist: nothing can be consumed from them (a mistyped name? `safetel topics create` makes them)");
        }
        *known_missing = now_missing.clone();
        now_missing
    }

    /// The group membership the state commits send their offsets with.
    pub fn group_membership(&self) -> GroupMembership {
        Arc::clone(&self.group)
    }

    fn rebalance_pending(&self) -> bool {
        self.shared
            .rebalances
            .lock()
            .map(|r| !r.is_empty())
            .unwrap_or(false)
    }
}

impl Drop for KafkaSource {
    /// Before the consumer closes (and leaves the group, revoking what it holds).
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
    }
}

impl KafkaSource {
    /// With a schema registry: the record's writer schema is asked for before the engine decodes
    /// the record. While the registry cannot be reached the pipeline waits, as through a broker
    /// outage (counted in `safetel_source_errors_total`), rather than dead-letter good records.
    /// Without one (fixed ids), nothing to ask.
    fn await_writer_schema(&self, payload: &[u8]) {
        let Ok((id, _)) = crate::codec::split_header(payload) else {
            return;
        };
        let mut backoff = Duration::from_millis(100);
        while !crate::codec::writers::is_known(id) {
            match crate::codec::writers::writer(id) {
                Err(crate::codec::DecodeError::RegistryUnavailable(_, error)) => {
                    if self.shared.closing.load(Ordering::Relaxed) {
                        return;
                    }
                    self.shared.metrics.source_errors.inc();
                    warn!(id, %error, ?backoff, "the schema registry cannot be reached: waiting for it");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                // Known now, or known not to exist (the engine dead-letters the record).
                _ => return,
            }
        }
    }
}

impl RecordSource for KafkaSource {
    fn poll(
        &mut self,
        max_wait: Duration,
        handle: &mut dyn FnMut(&SourceRecord<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<Poll, SourceError> {
        let mut wait = max_wait;
        let mut count = 0;
        while count < MAX_BATCH && !self.rebalance_pending() {
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => {
                    if count == 0 {
                        self.shared.broker_reachable();
                        self.shared.clear_error();
                    }
                    let partition = self
                        .consumer
                        .context()
                        .internal(message.topic(), message.partition());
                    let (timestamp_ms, replaced) = reference_timestamp(
                        message.timestamp().to_millis(),
                        crate::stream::runner::unix_ms(),
                    );
                    if replaced {
                        self.shared.metrics.timestamps_replaced.inc();
                    }
                    let record = SourceRecord {
                        partition,
                        offset: message.offset(),
                        key: message.key(),
                        payload: message.payload().unwrap_or(&[]),
                        timestamp_ms: Some(timestamp_ms),
                    };
                    if partition.is_source() {
                        self.await_writer_schema(record.payload);
                    }
                    let flow = handle(&record);
                    count += 1;
                    wait = Duration::ZERO;
                    if flow.is_break() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Transient broker errors are retried by librdkafka; they are counted and the
                    // loop goes on. Nothing is skipped: offsets only move with processed records.
                    self.shared.metrics.source_errors.inc();
                    let code = e.rdkafka_error_code();
                    if code == Some(RDKafkaErrorCode::AllBrokersDown)
                        && self.shared.all_brokers_down(&e.to_string())
                    {
                        break;
                    }
                    warn!(error = %e, "consumer error");
                    self.shared.note_error(code, e.to_string());
                    break;
                }
            }
        }
        Ok(Poll::Records(count))
    }

    fn rebalance(&mut self) -> Option<Rebalance> {
        self.shared.rebalances.lock().ok()?.pop_front()
    }

    fn revoked(&mut self) {
        if let Err(e) = self.consumer.unassign() {
            warn!(error = %e, "unassign failed");
        }
    }

    fn assign(&mut self, positions: &[(PartitionId, Option<i64>)]) -> Result<(), SourceError> {
        let mut assignment = Tpl::new();
        for &(partition, next) in positions {
            let (topic, at) = self.topics.input(partition);
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            info!(
                topic,
                partition = at,
                ?offset,
                "consuming from the stored offset"
            );
            assignment
                .add_partition_offset(topic, at, offset)
                .map_err(|e| SourceError::Position {
                    topic: topic.to_string(),
                    partition: at,
                    offset: format!("{offset:?}"),
                    detail: e.to_string(),
                })?;
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| SourceError::Assign(e.to_string()))?;
        if let Ok(mut group) = self.group.lock() {
            *group = self.consumer.group_metadata();
        }
        if self.partition_count.is_none() {
            match self
                .consumer
                .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            {
                Ok(metadata) => {
                    self.partition_count = metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == self.topic)
                        .map(|t| t.partitions().len() as i32)
                        .filter(|n| *n > 0);
                }
                Err(e) => warn!(error = %e, "cannot read the events topic's partition count yet"),
            }
        }
        Ok(())
    }

    fn partition_count(&self) -> Option<i32> {
        self.partition_count
    }

    fn session_timeout(&self) -> Option<Duration> {
        Some(self.session_timeout)
    }

    fn health(&self) -> SourceHealth {
        SourceHealth {
            missing_topics: self.missing_topics(),
            group_error: self
                .shared
                .group_error
                .lock()
                .ok()
                .and_then(|e| e.describe()),
        }
    }

    fn lag(&self, positions: &HashMap<PartitionId, i64>) -> Vec<Lag> {
        let marks = self
            .shared
            .high_watermarks
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let mut lag: Vec<Lag> = marks
            .iter()
            .filter_map(|(p, high)| {
                let (topic, partition) = self.topics.input(*p);
                Some(Lag {
                    internal: *p,
                    topic: topic.to_string(),
                    group: self.group_id.clone(),
                    partition,
                    behind: (high - positions.get(p)?).max(0),
                })
            })
            .collect();
        lag.sort_unstable_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        lag
    }

    fn partitions(&self) -> Option<Vec<(i32, Option<i64>)>> {
        let assignment = self.consumer.assignment().ok()?;
        let marks = self.shared.high_watermarks.lock().ok()?;
        Some(
            assignment
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| {
                    let mark = marks.get(&PartitionId::Source(e.partition()));
                    (e.partition(), mark.copied())
                })
                .collect(),
        )
    }
}

/// The consumer's `session.timeout.ms` (librdkafka's default, 45 s, unless
/// `[kafka.properties]` sets it).
fn session_timeout_ms(config: &Config) -> u64 {
    config
        .kafka
        .properties
        .get("session.timeout.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(45_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_stays_reported_when_transient_errors_follow_it() {
        let mut reported = ReportedErrors::default();
        reported.note(
            Some(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed".into(),
        );
        reported.note(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "Disconnected".into(),
        );
        reported.note(
            Some(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down".into(),
        );
        let text = reported.describe().unwrap();
        assert!(text.starts_with("SASL authentication error"), "{text}");
        assert!(text.ends_with("1/1 brokers are down"), "{text}");
        assert!(
            !text.contains("Disconnected"),
            "only the last transient one: {text}"
        );

        let mut transient = ReportedErrors::default();
        transient.note(None, "rebalance: x".into());
        transient.note(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "Disconnected".into(),
        );
        assert_eq!(transient.describe().as_deref(), Some("Disconnected"));
        assert_eq!(ReportedErrors::default().describe(), None);
    }
}
