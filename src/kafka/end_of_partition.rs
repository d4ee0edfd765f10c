//! [`EndOfPartition`]: the client context of the readers that read a partition to its end
//! (changelog restores, fact rebuilds from the input).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::warn;

/// Notes that a changelog reader reached the end of its partition (librdkafka reports it as a
/// client-level event).
#[derive(Default)]
pub(super) struct EndOfPartition(pub(super) Arc<AtomicBool>);

impl ClientContext for EndOfPartition {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PartitionEOF) => self.0.store(true, Ordering::Relaxed),
            _ => warn!(%error, reason, "reader error"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndOfPartition {}
