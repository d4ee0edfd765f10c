//! Reads the group view's topic (`<group_id>.group-view`) whole, from its start and then as
//! commits land, into a [`SharedView`] the HTTP edge serves from. Read committed: a record is
//! seen only once the commit it belongs to is durable, with the state it describes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::client_config;
use crate::config::Config;
use crate::detect::fleet_relative::FleetRelativeParams;
use crate::engine::view::SharedView;
use crate::stream::runner::unix_ms;

/// Starts the reader on its own thread; it stops when `shutdown` is set.
pub fn spawn_reader(
    config: &Config,
    params: FleetRelativeParams,
    view: Arc<SharedView>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let config = config.clone();
    let topic = config.kafka.group_view_topic();
    view.progress.lock().expect("view progress").topic = topic.clone();
    std::thread::Builder::new()
        .name("group-view".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                if let Err(e) = read(&config, &topic, params, &view, &shutdown) {
                    warn!(error = %e, %topic, "reading the group view failed; trying again in 5 s (pages show this process's partitions meanwhile)");
                    note(&view, |p| p.error = Some(format!("reading `{topic}`: {e}")));
                    for _ in 0..50 {
                        if shutdown.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

fn note(view: &SharedView, f: impl FnOnce(&mut crate::engine::view::ViewProgress)) {
    f(&mut view
        .progress
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()));
}

/// Reads from the start of the topic until `shutdown`; an error ends it (the caller retries).
fn read(
    config: &Config,
    topic: &str,
    params: FleetRelativeParams,
    view: &SharedView,
    shutdown: &AtomicBool,
) -> Result<(), KafkaError> {
    let reader = format!("{}.group-view-reader", config.kafka.group_id);
    let consumer: BaseConsumer = client_config(
        config,
        &[],
        &[
            ("group.id", reader.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
        ],
    )
    .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let known = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if !known {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    // From the start: what an earlier reader of this process applied is read again.
    *view
        .state
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Default::default();
    info!(%topic, "reading the group view");
    let mut at_end = false;
    while !shutdown.load(Ordering::Relaxed) {
        let mut batch = Vec::new();
        let mut wait = Duration::from_millis(200);
        while batch.len() < 4096 {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => {
                    at_end = false;
                    batch.push((
                        message.key().unwrap_or_default().to_vec(),
                        message.payload().map(<[u8]>::to_vec),
                    ));
                    wait = Duration::ZERO;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    at_end = true;
                    break;
                }
                Some(Err(e)) => return Err(e),
            }
        }
        let mut refused = 0;
        if !batch.is_empty() {
            let mut state = view
                .state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (key, value) in &batch {
                if let Err(e) = state.apply(params, key, value.as_deref()) {
                    warn!(error = %e, "a group view record that does not read is skipped");
                    refused += 1;
                }
            }
        }
        note(view, |p| {
            p.records += (batch.len() - refused) as u64;
            p.refused += refused as u64;
            if !batch.is_empty() {
                p.error = None;
            }
            if at_end {
                p.caught_up_at_ms = Some(unix_ms());
            }
        });
    }
    Ok(())
}
