//! The Kafka edge: consumer source, dead-letter producer, record producer, topic admin.
//!
//! Thin adapters between librdkafka (through `rdkafka`, with its bundled librdkafka) and the
//! engine's traits. Client settings always come from [`Config::client_properties`], so TLS/SASL
//! and any other librdkafka property configured by the user reach every client.

mod admin;
mod dlq;
mod producer;
mod source;

use rdkafka::ClientConfig;

use crate::config::Config;

pub use admin::create_topics;
pub use dlq::KafkaDeadLetters;
pub use producer::{ProduceError, RecordProducer};
pub use source::KafkaSource;

/// A librdkafka client configuration: safetel's `defaults`, then the user's properties (which
/// may change them), then the settings safetel's guarantees depend on (`required`).
pub fn client_config(
    config: &Config,
    defaults: &[(&str, &str)],
    required: &[(&str, &str)],
) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in defaults {
        client.set(*key, *value);
    }
    for (key, value) in config.client_properties() {
        client.set(key, value);
    }
    for (key, value) in required {
        client.set(*key, *value);
    }
    client
}
