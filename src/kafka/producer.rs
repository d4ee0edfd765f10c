//! Produces framed records to a topic (the generator's Kafka output), with delivery accounting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::client_config;
use super::dlq::DeliveryFailures;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0} records were not delivered")]
    Undelivered(u64),
}

pub struct RecordProducer {
    producer: BaseProducer<DeliveryFailures>,
    failures: Arc<AtomicU64>,
    topic: String,
}

impl RecordProducer {
    pub fn new(config: &Config, topic: &str) -> Result<RecordProducer, KafkaError> {
        let failures = Arc::new(AtomicU64::new(0));
        let producer = client_config(
            config,
            &[("linger.ms", "20"), ("batch.size", "1000000")],
            &[("enable.idempotence", "true")],
        )
        .create_with_context(DeliveryFailures(Arc::clone(&failures)))?;
        Ok(RecordProducer {
            producer,
            failures,
            topic: topic.to_string(),
        })
    }

    /// Queues one record, waiting for room when librdkafka's queue is full.
    pub fn send(&self, key: &[u8], payload: &[u8]) -> Result<(), ProduceError> {
        let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits until every queued record is delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), ProduceError> {
        self.producer.flush(timeout)?;
        match self.failures.swap(0, Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(ProduceError::Undelivered(n)),
        }
    }
}
