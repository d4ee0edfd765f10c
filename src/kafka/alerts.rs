//! The regressions topic: each alert Avro-encoded (schema id 3, Confluent framing), keyed by
//! its deterministic `alert_id` so that consumers and compaction can deduplicate replays.

use std::time::Duration;

use rdkafka::error::KafkaError;

use super::RecordProducer;
use crate::codec::encode_alert;
use crate::config::Config;
use crate::engine::runner::{AlertSink, SinkError};
use crate::model::RegressionAlert;

pub struct KafkaAlerts {
    producer: RecordProducer,
    flush_timeout: Duration,
    buffer: Vec<u8>,
}

impl KafkaAlerts {
    pub fn new(config: &Config) -> Result<KafkaAlerts, KafkaError> {
        Ok(KafkaAlerts {
            producer: RecordProducer::new(config, &config.kafka.regressions_topic)?,
            flush_timeout: Duration::from_millis(config.state.shutdown_deadline_ms),
            buffer: Vec::new(),
        })
    }
}

impl AlertSink for KafkaAlerts {
    fn send(&mut self, alert: &RegressionAlert) -> Result<(), SinkError> {
        self.buffer.clear();
        encode_alert(alert, &mut self.buffer);
        self.producer
            .send(alert.alert_id.as_bytes(), &self.buffer)
            .map_err(|e| SinkError(format!("alert {}: {e}", alert.alert_id)))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.producer
            .flush(self.flush_timeout)
            .map_err(|e| SinkError(format!("alerts: {e}")))
    }
}
