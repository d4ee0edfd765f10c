//! `safetel topics create`: the topics with partition counts from config; existing ones are kept.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::info;

use super::client_config;
use crate::config::Config;

/// Creates the events, DLQ, regressions and review-request topics (the last with the events
/// topic's partitions: both are keyed by vehicle id), and the group's internal topics: the
/// compacted state changelog (one partition per events partition), the cohort repartition topic
/// and its aggregators' compacted changelog (`kafka.cohort_partitions` each), and the compacted
/// group view (one partition). Returns (topic, created) per topic.
pub async fn create_topics(config: &Config) -> Result<Vec<(String, bool)>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config, &[], &[]).create()?;
    let k = &config.kafka;
    let replication = || TopicReplication::Fixed(k.replication_factor);
    let (state_changelog, cohort_reports, cohort_changelog, group_view) = (
        k.state_changelog_topic(),
        k.cohort_topic(),
        k.cohort_changelog_topic(),
        k.group_view_topic(),
    );
    let topics = [
        NewTopic::new(&k.events_topic, k.events_partitions, replication()),
        NewTopic::new(&k.dlq_topic, k.dlq_partitions, replication()),
        NewTopic::new(
            &k.regressions_topic,
            k.regressions_partitions,
            replication(),
        ),
        NewTopic::new(&k.review_requests_topic, k.events_partitions, replication()),
        NewTopic::new(&state_changelog, k.events_partitions, replication())
            .set("cleanup.policy", "compact"),
        NewTopic::new(&cohort_reports, k.cohort_partitions, replication()),
        NewTopic::new(&cohort_changelog, k.cohort_partitions, replication())
            .set("cleanup.policy", "compact"),
        NewTopic::new(&group_view, 1, replication()).set("cleanup.policy", "compact"),
    ];
    // Bounded: a broker that does not answer us (unreachable, or refusing our credentials) is an
    // error within 30 s, not a hang.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)));
    let mut outcome = Vec::new();
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(topic) => {
                info!(%topic, "topic created");
                outcome.push((topic, true));
            }
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => outcome.push((topic, false)),
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::error!(%topic, "create failed"));
            }
        }
    }
    Ok(outcome)
}
