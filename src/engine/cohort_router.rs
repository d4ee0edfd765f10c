//! The cohort router: where a source partition's cohort report goes, and which source partitions
//! a cohort bin waits for.
//!
//! In process (`demo`, the experiments) one aggregator takes every report at once. With the
//! repartition topic (`run`), reports leave with the next commit, split by cohort over the
//! topic's partitions, and come back as records of aggregator partitions
//! ([`PartitionId::Cohort`]) wherever the consumer group assigns them. The
//! [`CohortAggregator`]s held here close cohort bins once every source partition has passed them
//! ([`cohorts`](super::cohorts) owns the aggregation itself).

use std::collections::{BTreeMap, BTreeSet};

use super::cohorts::{CohortAggregator, PartitionReport};
use super::detection::DetectionSettings;
use super::outbox::Outbox;
use super::state;
use crate::metrics::Metrics;
use crate::model::{HazardClass, KeyKind, RegressionAlert};
use crate::partition_id::PartitionId;

/// Cohort reports' routes and the aggregators held by this process.
#[derive(Default)]
pub struct CohortRouter {
    /// Cohort aggregators by number (their partition of the repartition topic).
    pub(super) aggregators: BTreeMap<i32, CohortAggregator>,
    /// `Some(n)`: reports leave through the repartition topic's `n` partitions and come back as
    /// records; `None`: one aggregator in process takes them directly.
    topic_partitions: Option<i32>,
    /// How many source partitions the input topic has, where known: with the repartition
    /// topic, cohort bins wait for every one of them (except those reported empty).
    source_partitions: Option<i32>,
    /// Source partitions reported empty since start.
    announced_empty: BTreeSet<i32>,
    /// The partitions this process reads, with their end offsets where known (`None`: unknown,
    /// every partition that delivered a record counts).
    inputs: Option<Vec<(i32, Option<i64>)>>,
}

/// How far a source partition has read, as the cohort bins' waiting rules see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceProgress {
    /// It has delivered an accepted record (its vehicles have clocks).
    pub accepted: bool,
    pub next_offset: i64,
}

/// The source partitions held, by number.
pub type SourcesRead = BTreeMap<i32, SourceProgress>;

/// What routing a report may change besides the aggregators.
pub struct RouteEffects<'a> {
    pub detection: &'a DetectionSettings,
    pub partitions: &'a SourcesRead,
    pub outbox: &'a mut Outbox,
    pub alerts: &'a mut Vec<RegressionAlert>,
    pub metrics: &'a Metrics,
}

impl CohortRouter {
    /// Reports go through a repartition topic of `partitions` partitions.
    pub fn use_topic(&mut self, partitions: i32) {
        self.topic_partitions = Some(partitions.max(1));
    }

    /// How many partitions the input topic has.
    pub fn set_source_partitions(&mut self, partitions: i32) {
        self.source_partitions = Some(partitions);
    }

    /// The partitions read (with end offsets where known). With the repartition topic, a
    /// partition known to be empty is reported so, so that cohort bins do not wait for it.
    pub fn set_inputs(
        &mut self,
        inputs: &[(i32, Option<i64>)],
        partitions: &SourcesRead,
        outbox: &mut Outbox,
    ) {
        if self.inputs.as_deref() != Some(inputs) {
            self.inputs = Some(inputs.to_vec());
        }
        let Some(topic_partitions) = self.topic_partitions else {
            return;
        };
        for &(p, end) in inputs {
            if known_empty(partitions, p, end) && self.announced_empty.insert(p) {
                outbox
                    .reports
                    .extend(PartitionReport::empty(p).split(topic_partitions));
            }
        }
    }

    /// Lets go of released partitions' aggregators and what was announced of them.
    pub fn release(&mut self, gone: impl Fn(&PartitionId) -> bool) {
        self.aggregators
            .retain(|q, _| !gone(&PartitionId::Cohort(*q)));
        self.announced_empty
            .retain(|p| !gone(&PartitionId::Source(*p)));
    }

    /// Takes a partition's cohort report: to the aggregator in process, or to the repartition
    /// topic with the next commit.
    pub fn route(&mut self, report: PartitionReport, effects: RouteEffects<'_>) {
        match self.topic_partitions {
            Some(topic_partitions) => {
                for (q, part) in report.split(topic_partitions) {
                    let parts = part.split_by_size(state::MAX_SEGMENT_BYTES);
                    effects
                        .outbox
                        .reports
                        .extend(parts.into_iter().map(|p| (q, p)));
                }
            }
            None => self.aggregate(0, report, effects),
        }
    }

    /// Hands a report to aggregator `at` (its number: the repartition topic's partition) and
    /// closes the cohort bins it now can.
    pub fn aggregate(&mut self, at: i32, report: PartitionReport, effects: RouteEffects<'_>) {
        let mut aggregator = self.aggregators.remove(&at).unwrap_or_default();
        if aggregator.apply(report) {
            effects.outbox.dirty_aggregators.insert(at);
        }
        let sources = self.sources(effects.partitions, &aggregator);
        let alerts_before = effects.alerts.len();
        let (fed, updates) = aggregator.close(effects.detection, &sources, effects.alerts);
        if updates > 0 {
            let metrics = effects.metrics;
            metrics.detector_updates(KeyKind::Cohort).inc_by(updates);
            metrics
                .bins_closed(KeyKind::Cohort)
                .inc_by(updates / HazardClass::COUNT as u64);
            effects.outbox.dirty_aggregators.insert(at);
        }
        effects
            .outbox
            .dirty_cohorts
            .extend(fed.into_iter().map(|key| (at, key)));
        self.aggregators.insert(at, aggregator);
        effects
            .metrics
            .count_alerts(&effects.alerts[alerts_before..]);
    }

    /// The source partitions cohort bins wait for. In process: the partitions read (except one
    /// known to be empty), or where they are not known, every partition that delivered a
    /// record. With the repartition topic: every partition of the input topic, except those
    /// reported empty (none while the partition count is unknown).
    fn sources(&self, partitions: &SourcesRead, aggregator: &CohortAggregator) -> Vec<i32> {
        match (self.topic_partitions, self.source_partitions) {
            (None, _) if self.inputs.is_some() => self
                .inputs
                .iter()
                .flatten()
                .filter(|(p, end)| !known_empty(partitions, *p, *end))
                .map(|(p, _)| *p)
                .collect(),
            (None, _) => partitions
                .iter()
                .filter(|(_, s)| s.accepted)
                .map(|(p, _)| *p)
                .collect(),
            (Some(_), None) => Vec::new(),
            (Some(_), Some(count)) => (0..count)
                .filter(|p| !aggregator.sources.get(p).is_some_and(|s| s.empty))
                .collect(),
        }
    }
}

/// Whether a partition has delivered no accepted record and is at its end (`end`, where
/// known). (Not "has no watermark": one with fewer vehicles than the quorum has none yet.)
fn known_empty(partitions: &SourcesRead, source: i32, end: Option<i64>) -> bool {
    let progress = partitions.get(&source).copied().unwrap_or_default();
    end.is_some_and(|end| !progress.accepted && progress.next_offset >= end)
}
