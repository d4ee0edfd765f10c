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

/// A librdkafka client configuration with the user's properties, then `overrides`.
pub fn client_config(config: &Config, overrides: &[(&str, &str)]) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in config.client_properties() {
        client.set(key, value);
    }
    for (key, value) in overrides {
        client.set(*key, *value);
    }
    client
}
