//! The Kafka edge: consumer source, state changelog (the commit target of `run`), dead-letter
//! producer, alert and review-request producer, record producer, the simulated review service,
//! topic admin.
//!
//! Thin adapters between librdkafka (through `rdkafka`, with its bundled librdkafka) and the
//! engine's traits. Client settings always come from [`Config::client_properties`], so TLS/SASL
//! and any other librdkafka property configured by the user reach every client.

mod admin;
mod changelog;
mod dlq;
mod facts_rebuild;
mod outputs;
mod producer;
mod review_service;
mod source;

use rdkafka::ClientConfig;

use crate::config::Config;

pub use admin::create_topics;
pub use changelog::{ChangelogError, ChangelogStore, GroupMembership, Topics};
pub use dlq::KafkaDeadLetters;
pub use outputs::KafkaOutputs;
pub use producer::{ProduceError, RecordProducer};
pub use review_service::{ReviewServiceError, ReviewServiceSummary, serve_reviews};
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

#[cfg(test)]
mod tests {
    use super::*;

    /// librdkafka is built with TLS and SASL: a secured cluster's settings are accepted as given.
    /// (Creating a client does not connect, so no broker is needed.)
    #[test]
    fn tls_and_sasl_settings_reach_librdkafka() {
        let mut config = Config::default_config();
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "safetel"),
            ("sasl.password", "secret"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ] {
            config.kafka.properties.insert(key.into(), value.into());
        }
        let source = KafkaSource::new(&config, crate::metrics::Metrics::new());
        assert!(
            source.is_ok(),
            "consumer rejected TLS/SASL settings: {:?}",
            source.err()
        );
        assert!(KafkaDeadLetters::new(&config).is_ok());

        config
            .kafka
            .properties
            .insert("security.protocol".into(), "NOT_A_PROTOCOL".into());
        let err = KafkaDeadLetters::new(&config)
            .err()
            .expect("librdkafka checks the values");
        assert!(err.to_string().contains("security.protocol"), "{err}");
    }
}
