//! The dead-letter topic: the original bytes and key, with headers saying why.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tracing::{debug, error, warn};

use super::client_config;
use crate::config::Config;
use crate::engine::{Rejection, SourceRecord};
use crate::stream::runner::{DeadLetterSink, SinkError};

/// Counts deliveries that failed after librdkafka's own retries.
#[derive(Default)]
pub struct DeliveryFailures(pub(super) Arc<AtomicU64>);

impl ClientContext for DeliveryFailures {
    /// Connection losses are the consumer's to report (once per outage, on /health and in the
    /// metrics); a producer repeating them at every reconnect attempt would bury the log.
    /// Undelivered records still count as failures (see `delivery`).
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
                debug!(%error, reason, "producer lost its broker connection")
            }
            _ => warn!(%error, reason, "kafka producer error"),
        }
    }
}

impl ProducerContext for DeliveryFailures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            error!(error = %e, "dead-letter delivery failed");
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub struct KafkaDeadLetters {
    producer: BaseProducer<DeliveryFailures>,
    topic: String,
    source_topic: String,
    failures: Arc<AtomicU64>,
    flush_timeout: Duration,
}

impl KafkaDeadLetters {
    pub fn new(config: &Config) -> Result<KafkaDeadLetters, KafkaError> {
        let failures = Arc::new(AtomicU64::new(0));
        let producer = client_config(
            config,
            &[("linger.ms", "5")],
            &[("enable.idempotence", "true")],
        )
        .create_with_context(DeliveryFailures(Arc::clone(&failures)))?;
        Ok(KafkaDeadLetters {
            producer,
            topic: config.kafka.dlq_topic.clone(),
            source_topic: config.kafka.events_topic.clone(),
            failures,
            flush_timeout: Duration::from_millis(config.state.shutdown_deadline_ms),
        })
    }
}

impl DeadLetterSink for KafkaDeadLetters {
    fn send(&mut self, record: &SourceRecord<'_>, rejection: &Rejection) -> Result<(), SinkError> {
        let detail = rejection.to_string();
        let partition = record.partition.stored().to_string();
        let offset = record.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(rejection.reason()),
            })
            .insert(Header {
                key: "error",
                value: Some(detail.as_str()),
            })
            .insert(Header {
                key: "source.topic",
                value: Some(self.source_topic.as_str()),
            })
            .insert(Header {
                key: "source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "source.offset",
                value: Some(offset.as_str()),
            });
        let mut message = BaseRecord::to(&self.topic)
            .payload(record.payload)
            .headers(headers);
        if let Some(key) = record.key {
            message = message.key(key);
        }
        loop {
            match self.producer.send(message) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    message = back;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(SinkError(e.to_string())),
            }
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.producer
            .flush(self.flush_timeout)
            .map_err(|e| SinkError(e.to_string()))?;
        match self.failures.swap(0, Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(SinkError(format!(
                "{n} dead-letter records were not delivered"
            ))),
        }
    }
}
