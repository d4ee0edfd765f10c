//! The engine's messages on topics: each alert Avro-encoded (schema id 3, Confluent framing) on
//! the regressions topic, keyed by its deterministic `alert_id` so that consumers and compaction
//! can deduplicate replays; each review request (schema id 4) on `review.requests`, keyed by
//! vehicle id.

use std::time::Duration;

use rdkafka::error::KafkaError;

use super::RecordProducer;
use crate::codec::{encode_alert, encode_review_request};
use crate::config::Config;
use crate::model::{RegressionAlert, ReviewRequest};
use crate::stream::runner::{OutputSink, SinkError};

pub struct KafkaOutputs {
    alerts: RecordProducer,
    /// Made at the first request: most runs have no review budget.
    review_requests: Option<RecordProducer>,
    config: Config,
    flush_timeout: Duration,
    buffer: Vec<u8>,
}

impl KafkaOutputs {
    pub fn new(config: &Config) -> Result<KafkaOutputs, KafkaError> {
        Ok(KafkaOutputs {
            alerts: RecordProducer::new(config, &config.kafka.regressions_topic)?,
            review_requests: None,
            config: config.clone(),
            flush_timeout: Duration::from_millis(config.state.shutdown_deadline_ms),
            buffer: Vec::new(),
        })
    }
}

impl OutputSink for KafkaOutputs {
    fn alert(&mut self, alert: &RegressionAlert) -> Result<(), SinkError> {
        self.buffer.clear();
        encode_alert(alert, &mut self.buffer);
        self.alerts
            .send(alert.alert_id.as_bytes(), &self.buffer)
            .map_err(|e| SinkError(format!("alert {}: {e}", alert.alert_id)))
    }

    fn review_request(&mut self, request: &ReviewRequest) -> Result<(), SinkError> {
        if self.review_requests.is_none() {
            let topic = &self.config.kafka.review_requests_topic;
            let producer = RecordProducer::new(&self.config, topic)
                .map_err(|e| SinkError(format!("review request producer: {e}")))?;
            self.review_requests = Some(producer);
        }
        self.buffer.clear();
        encode_review_request(request, &mut self.buffer);
        self.review_requests
            .as_ref()
            .expect("made above")
            .send(request.vehicle_id.as_bytes(), &self.buffer)
            .map_err(|e| SinkError(format!("review request for trip {}: {e}", request.trip_id)))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.alerts
            .flush(self.flush_timeout)
            .map_err(|e| SinkError(format!("alerts: {e}")))?;
        if let Some(requests) = &self.review_requests {
            requests
                .flush(self.flush_timeout)
                .map_err(|e| SinkError(format!("review requests: {e}")))?;
        }
        Ok(())
    }
}
