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
mod end_of_partition;
mod facts_rebuild;
pub mod group_view;
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

/// How long a command that talks to Kafka waits for a broker to answer before it gives up.
pub const BROKER_ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// No broker answered a metadata request at the configured bootstrap servers.
#[derive(Debug, thiserror::Error)]
#[error(
    "no Kafka broker answered at {bootstrap} within {within:?} ({source}): is the broker up, and do [kafka.properties] (security.protocol, sasl.*, ssl.*) match its listener?"
)]
pub struct BrokerUnreachable {
    pub bootstrap: String,
    pub within: std::time::Duration,
    #[source]
    pub source: rdkafka::error::KafkaError,
}

/// Asks a broker for the cluster's metadata: `Ok` once one answers, an error naming the
/// bootstrap servers after `within` (commands fail fast rather than wait on a wrong address).
pub fn check_broker(config: &Config, within: std::time::Duration) -> Result<(), BrokerUnreachable> {
    use rdkafka::producer::{BaseProducer, Producer};
    let unreachable = |source| BrokerUnreachable {
        bootstrap: config.kafka.bootstrap_servers.clone(),
        within,
        source,
    };
    let producer: BaseProducer = client_config(config, &[], &[])
        .create()
        .map_err(unreachable)?;
    producer
        .client()
        .fetch_metadata(None, within)
        .map(|_| ())
        .map_err(unreachable)
}

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
