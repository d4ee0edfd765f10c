//! `telemetry.events` as a [`RecordSource`]: a consumer-group member that starts each assigned
//! partition at the offset stored with its state, not at the group's committed offset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList as Tpl};
use tracing::{error, info, warn};

use super::client_config;
use crate::config::Config;
use crate::engine::SourceRecord;
use crate::engine::runner::{Poll, RecordSource, SourceError};
use crate::metrics::Metrics;

/// Most records handed to the engine per poll.
const MAX_BATCH: usize = 4096;

/// Shared between the consumer's callbacks and the loop.
struct Shared {
    /// Next offset per partition, from the state store, kept current at each commit.
    positions: Mutex<HashMap<i32, i64>>,
    /// Latest high watermark per partition, from librdkafka's statistics.
    high_watermarks: Mutex<HashMap<i32, i64>>,
    metrics: Metrics,
}

pub struct SourceContext {
    topic: String,
    shared: Arc<Shared>,
}

fn unix_now_s() -> f64 {
    crate::engine::runner::unix_ms() as f64 / 1000.0
}

impl Shared {
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
                    marks.insert(*partition, stats.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.metrics.source_errors.inc();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
            && self.shared.metrics.source_lost_brokers(unix_now_s())
        {
            error!(
                reason,
                "no broker reachable: consuming pauses, state and offsets stay as committed; health reports the outage until a broker answers"
            );
            return;
        }
        warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self
                    .shared
                    .positions
                    .lock()
                    .map(|p| p.clone())
                    .unwrap_or_default();
                let mut assignment = Tpl::new();
                for element in tpl.elements() {
                    let partition = element.partition();
                    let offset = positions
                        .get(&partition)
                        .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                    info!(topic = %self.topic, partition, ?offset, "partition assigned; starting at stored offset");
                    if let Err(e) = assignment.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        offset,
                    ) {
                        warn!(error = %e, "cannot set start offset");
                    }
                }
                if let Err(e) = consumer.assign(&assignment) {
                    warn!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                info!(topic = %self.topic, partitions = tpl.count(), "partitions revoked");
                if let Err(e) = consumer.unassign() {
                    warn!(error = %e, "unassign failed");
                }
            }
            other => warn!(error = ?other, "rebalance error"),
        }
    }
}

pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    topic: String,
    shared: Arc<Shared>,
}

impl KafkaSource {
    /// Joins the consumer group and subscribes; `positions` are the stored next offsets.
    pub fn new(
        config: &Config,
        positions: HashMap<i32, i64>,
        metrics: Metrics,
    ) -> Result<KafkaSource, KafkaError> {
        let topic = config.kafka.events_topic.clone();
        let shared = Arc::new(Shared {
            positions: Mutex::new(positions),
            high_watermarks: Mutex::new(HashMap::new()),
            metrics,
        });
        let context = SourceContext {
            topic: topic.clone(),
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
        ];
        let consumer: BaseConsumer<SourceContext> =
            client_config(config, &defaults, &required).create_with_context(context)?;
        consumer.subscribe(&[&topic])?;
        Ok(KafkaSource {
            consumer,
            topic,
            shared,
        })
    }
}

impl RecordSource for KafkaSource {
    fn poll(
        &mut self,
        max_wait: Duration,
        handle: &mut dyn FnMut(&SourceRecord<'_>),
    ) -> Result<Poll, SourceError> {
        let mut wait = max_wait;
        let mut count = 0;
        while count < MAX_BATCH {
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => {
                    if count == 0 {
                        self.shared.broker_reachable();
                    }
                    let record = SourceRecord {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key(),
                        payload: message.payload().unwrap_or(&[]),
                        timestamp_ms: message.timestamp().to_millis(),
                    };
                    handle(&record);
                    count += 1;
                    wait = Duration::ZERO;
                }
                Some(Err(e)) => {
                    // Transient broker errors are retried by librdkafka; they are counted and the
                    // loop goes on. Nothing is skipped: offsets only move with processed records.
                    self.shared.metrics.source_errors.inc();
                    warn!(error = %e, "consumer error");
                    break;
                }
            }
        }
        Ok(Poll::Records(count))
    }

    fn committed(&mut self, positions: &HashMap<i32, i64>) {
        if let Ok(mut stored) = self.shared.positions.lock() {
            stored.extend(positions.iter().map(|(p, o)| (*p, *o)));
        }
        // The group's offsets mirror the store's, for lag tooling; the store stays the truth.
        let mut tpl = Tpl::new();
        for (partition, offset) in positions {
            let _ = tpl.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset));
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            warn!(error = %e, "group offset commit failed (state store offsets are unaffected)");
        }
    }

    fn lag(&self, positions: &HashMap<i32, i64>) -> Vec<(i32, i64)> {
        let marks = self
            .shared
            .high_watermarks
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let mut lag: Vec<(i32, i64)> = marks
            .iter()
            .map(|(p, high)| (*p, (high - positions.get(p).copied().unwrap_or(0)).max(0)))
            .collect();
        lag.sort_unstable();
        lag
    }

    fn partitions(&self) -> Option<Vec<(i32, Option<i64>)>> {
        let assignment = self.consumer.assignment().ok()?;
        let marks = self.shared.high_watermarks.lock().ok()?;
        Some(
            assignment
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| (e.partition(), marks.get(&e.partition()).copied()))
                .collect(),
        )
    }
}
