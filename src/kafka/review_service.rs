//! The simulated review service on Kafka (`safetel generate --kafka --review-service`): reads
//! `review.requests`, answers each with the trip's withheld critical events as a `ReviewResult`
//! on the telemetry topic (same key, so the same partition as the trip), and commits its
//! offsets only once the answers are delivered, so a restart answers again rather than never.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use tracing::warn;

use super::{RecordProducer, client_config};
use crate::codec::decode_review_request;
use crate::config::Config;
use crate::generator::ReviewDesk;

/// What the service did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ReviewServiceSummary {
    pub requests: u64,
    pub answered: u64,
    /// Requests that did not decode (logged and skipped).
    pub malformed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewServiceError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("answers: {0}")]
    Produce(#[from] super::ProduceError),
}

/// Serves until `stop` is set or, with `idle_exit`, no request came for that long.
pub fn serve_reviews(
    config: &Config,
    desk: &mut ReviewDesk,
    idle_exit: Option<Duration>,
    stop: &AtomicBool,
) -> Result<ReviewServiceSummary, ReviewServiceError> {
    let group = format!("{}-review-service", config.kafka.group_id);
    let consumer: BaseConsumer = client_config(
        config,
        &[("auto.offset.reset", "earliest")],
        &[("group.id", &group), ("enable.auto.commit", "false")],
    )
    .create()?;
    consumer.subscribe(&[&config.kafka.review_requests_topic])?;
    let answers = RecordProducer::new(config, &config.kafka.events_topic)?;
    let flush_timeout = Duration::from_millis(config.state.shutdown_deadline_ms);
    let mut summary = ReviewServiceSummary::default();
    let mut last_request = Instant::now();
    let mut unflushed = false;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_request = Instant::now();
                summary.requests += 1;
                match decode_review_request(message.payload().unwrap_or_default()) {
                    Ok(request) => {
                        let (key, bytes) = desk.answer(&request);
                        answers.send(key.as_bytes(), &bytes)?;
                        summary.answered += 1;
                    }
                    Err(e) => {
                        summary.malformed += 1;
                        warn!(offset = message.offset(), error = %e, "malformed review request skipped");
                    }
                }
                unflushed = true;
            }
            Some(Err(e)) => warn!(error = %e, "review request consumer"),
            None => {
                // Quiet: make what was answered durable, then remember how far we got.
                if unflushed {
                    answers.flush(flush_timeout)?;
                    consumer.commit_consumer_state(CommitMode::Sync)?;
                    unflushed = false;
                }
                if idle_exit.is_some_and(|idle| last_request.elapsed() >= idle) {
                    break;
                }
            }
        }
    }
    answers.flush(flush_timeout)?;
    if unflushed {
        consumer.commit_consumer_state(CommitMode::Sync)?;
    }
    Ok(summary)
}
