//! Prometheus metrics: every name, unit and label in one place.
//!
//! Handles are resolved once (label values are fixed sets), so the per-record path only touches
//! atomics. `render` produces the text exposition format for `GET /metrics`.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::dead_letter::{DeadLetterShare, Rejection};
use crate::model::{AlertStatus, KeyKind, RecordKind};

/// All of safetel's metrics, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub records_received: IntCounter,
    accepted: [IntCounter; 4],
    dlq: Vec<(&'static str, IntCounter)>,
    pub consumer_lag: IntGaugeVec,
    pub commits: IntCounter,
    /// Failed attempts of state commits (each is retried, or fails the run).
    pub commit_failures: IntCounter,
    /// Times the consumer group moved on without this process (it rejoined, or exited).
    pub group_rejoins: IntCounter,
    /// Unix time the current run of failed commit attempts began, 0 while commits succeed.
    pub commit_failing_since: Gauge,
    pub commit_duration: Histogram,
    pub processing_latency: Histogram,
    /// From the produce timestamp of the record that completed an alert's evidence to the alert
    /// flushed to the regressions topic.
    pub alert_latency: Histogram,
    pub vehicles: IntGauge,
    pub source_errors: IntCounter,
    /// 1 while the source reaches no broker (librdkafka: all brokers down), else 0.
    pub source_disconnected: IntGauge,
    /// Times the source lost every broker.
    pub source_outages: IntCounter,
    /// Unix time the current outage began, 0 while connected.
    pub source_disconnected_since: Gauge,
    /// Bins fed to change-point series, by key kind (vehicle, cohort).
    detector_updates: [IntCounter; 2],
    /// Bins closed (no record can change them any more), one per key and bin, by key kind.
    bins_closed: [IntCounter; 2],
    alerts: [IntCounter; 3],
    pub open_episodes: IntGauge,
    /// Refits by outcome: `converged`, `not_converged` (previous priors kept), `failed`.
    pub refit_runs: IntCounterVec,
    pub refit_duration: Histogram,
    pub refit_max_rhat: Gauge,
    pub refit_min_ess_bulk: Gauge,
    /// 1 if the last refit converged (its priors are in use), 0 if not.
    pub refit_converged: IntGauge,
    /// Trips selected for review under the sampling policy.
    pub reviews: IntCounter,
    /// Review service answers, by outcome (`answered`, `timed_out`).
    pub review_results: IntCounterVec,
    /// Reviews requested and not answered yet.
    pub reviews_pending: IntGauge,
    /// Vehicle bins that left the state with retention (their sums stay in the totals).
    pub bins_retired: IntCounter,
    /// Closed vehicle bins that left memory for the store (pages read them there).
    pub bins_stored: IntCounter,
    /// Records a partition task left for the next batch: its large bin close waited for
    /// another's to be committed first.
    pub records_deferred: IntCounter,
    /// The history cache (`state.cache_mb`): bytes held, and reads it answered and missed,
    /// entries it let go.
    pub history_cache_bytes: IntGauge,
    pub history_cache_reads: IntCounterVec,
    pub history_cache_evictions: IntCounter,
    /// Silent vehicles that left memory (their state stays in the store), and that came back.
    pub vehicles_departed: IntCounter,
    pub vehicles_returned: IntCounter,
    /// Source partitions this process owns now (its share of the consumer group's).
    pub assigned_partitions: IntGauge,
    /// Partitions whose state was replaced from their changelog (moved from another process).
    pub partitions_restored: IntCounter,
    /// Changelog records read into the state store by those restores.
    pub changelog_records_restored: IntCounter,
    /// Bytes (keys and values, before the producer compresses them) state commits sent to the
    /// changelog topics, by column family (and `cohort-reports`, `group-view`).
    pub changelog_bytes: IntCounterVec,
    /// Facts (local, the warehouse's input) rebuilt from the input topic after those restores,
    /// and those the input topic no longer held.
    pub facts_rebuilt: IntCounter,
    pub facts_missing: IntCounter,
    /// Records whose Kafka timestamp was absent or implausible: their event times were judged
    /// against this host's clock at receipt instead.
    pub timestamps_replaced: IntCounter,
    /// The dead-letter share of the last records (`stream.dlq_window_records`), as of the last
    /// commit point, and by reason.
    dlq_recent_share: Gauge,
    dlq_recent: IntGaugeVec,
    dead_letter_share: std::sync::Arc<std::sync::Mutex<DeadLetterShare>>,
}

impl Metrics {
    /// Updates the alert metrics for `raised` alerts.
    pub fn count_alerts(&self, raised: &[crate::model::RegressionAlert]) {
        for alert in raised {
            self.alerts(alert.status).inc();
            let change = match alert.status {
                crate::model::AlertStatus::Opened => 1,
                crate::model::AlertStatus::Resolved => -1,
                crate::model::AlertStatus::Updated => 0,
            };
            self.open_episodes.add(change);
        }
    }

    pub fn new() -> Metrics {
        let registry = Registry::new();
        let accepted_vec = IntCounterVec::new(
            Opts::new(
                "safetel_records_consumed_total",
                "Telemetry records accepted into state, by type",
            ),
            &["type"],
        )
        .expect("valid metric");
        let dlq_vec = IntCounterVec::new(
            Opts::new(
                "safetel_dlq_records_total",
                "Records sent to the dead-letter topic, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let updates_vec = IntCounterVec::new(
            Opts::new(
                "safetel_detector_bin_updates_total",
                "Closed bins fed to a change-point series (one per hazard class), by key kind",
            ),
            &["key_kind"],
        )
        .expect("valid metric");
        let closed_vec = IntCounterVec::new(
            Opts::new(
                "safetel_bins_closed_total",
                "Bins closed past the watermark and allowed lateness, one per key and bin, by key kind",
            ),
            &["key_kind"],
        )
        .expect("valid metric");
        let alerts_vec = IntCounterVec::new(
            Opts::new(
                "safetel_alerts_total",
                "Regression alerts raised, by status",
            ),
            &["status"],
        )
        .expect("valid metric");
        let metrics = Metrics {
            records_received: IntCounter::new(
                "safetel_records_received_total",
                "Records read from the source",
            )
            .expect("valid metric"),
            accepted: RecordKind::ALL.map(|k| accepted_vec.with_label_values(&[k.name()])),
            dlq: Rejection::REASONS
                .iter()
                .map(|r| (*r, dlq_vec.with_label_values(&[r])))
                .collect(),
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "safetel_consumer_lag_records",
                    "Records behind the partition's high watermark, by topic, consumer group and partition",
                ),
                &["topic", "group", "partition"],
            )
            .expect("valid metric"),
            commits: IntCounter::new(
                "safetel_commits_total",
                "State commits (RocksDB batch with offsets)",
            )
            .expect("valid metric"),
            commit_failures: IntCounter::new(
                "safetel_commit_failures_total",
                "Failed attempts of state commits (retried through outages; a refused record fails the run)",
            )
            .expect("valid metric"),
            group_rejoins: IntCounter::new(
                "safetel_group_rejoins_total",
                "Times the consumer group moved on without this process (a pause past the session timeout): what it held was dropped and it rejoined",
            )
            .expect("valid metric"),
            commit_failing_since: Gauge::new(
                "safetel_commit_failing_since_seconds",
                "Unix time the current run of failed commit attempts began, 0 while commits succeed",
            )
            .expect("valid metric"),
            commit_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "safetel_commit_duration_seconds",
                    "Time to flush sinks and write one commit",
                )
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            )
            .expect("valid metric"),
            processing_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "safetel_processing_latency_seconds",
                    "From the record's produce timestamp to its processing",
                )
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 18).expect("valid buckets")),
            )
            .expect("valid metric"),
            alert_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "safetel_alert_latency_seconds",
                    "From the produce timestamp of the record that completed an alert's evidence to the alert flushed to the regressions topic",
                )
                .buckets(prometheus::exponential_buckets(0.01, 2.0, 16).expect("valid buckets")),
            )
            .expect("valid metric"),
            vehicles: IntGauge::new("safetel_vehicles", "Vehicles in the state store")
                .expect("valid metric"),
            source_errors: IntCounter::new(
                "safetel_source_errors_total",
                "Errors reported by the source (broker)",
            )
            .expect("valid metric"),
            timestamps_replaced: IntCounter::new(
                "safetel_record_timestamps_replaced_total",
                "Records whose Kafka timestamp was absent or implausible (outside 2000..2100), judged against this host's clock at receipt",
            )
            .expect("valid metric"),
            dlq_recent_share: Gauge::new(
                "safetel_dlq_recent_share",
                "Share of the last stream.dlq_window_records records sent to the dead-letter topic",
            )
            .expect("valid metric"),
            dlq_recent: IntGaugeVec::new(
                Opts::new(
                    "safetel_dlq_recent_records",
                    "Records of the last stream.dlq_window_records sent to the dead-letter topic, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            dead_letter_share: Default::default(),
            source_disconnected: IntGauge::new(
                "safetel_source_disconnected",
                "1 while the consumer reaches no broker, else 0",
            )
            .expect("valid metric"),
            source_outages: IntCounter::new(
                "safetel_source_outages_total",
                "Times the consumer lost every broker",
            )
            .expect("valid metric"),
            source_disconnected_since: Gauge::new(
                "safetel_source_disconnected_since_seconds",
                "Unix time the current broker outage began; 0 while connected",
            )
            .expect("valid metric"),
            detector_updates: [KeyKind::Vehicle, KeyKind::Cohort]
                .map(|k| updates_vec.with_label_values(&[&k.name().to_ascii_lowercase()])),
            bins_closed: [KeyKind::Vehicle, KeyKind::Cohort]
                .map(|k| closed_vec.with_label_values(&[&k.name().to_ascii_lowercase()])),
            alerts: AlertStatus::ALL.map(|s| alerts_vec.with_label_values(&[s.name()])),
            open_episodes: IntGauge::new(
                "safetel_open_episodes",
                "Regression episodes open now, vehicles and cohorts",
            )
            .expect("valid metric"),
            refit_runs: IntCounterVec::new(
                Opts::new("safetel_refit_runs_total", "Nightly refits, by outcome"),
                &["outcome"],
            )
            .expect("valid metric"),
            refit_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "safetel_refit_duration_seconds",
                    "Nightly refit: facts, sampling, diagnostics, priors and snapshot",
                )
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets")),
            )
            .expect("valid metric"),
            refit_max_rhat: Gauge::new(
                "safetel_refit_max_rhat",
                "Largest rank-normalised R-hat of the last refit",
            )
            .expect("valid metric"),
            refit_min_ess_bulk: Gauge::new(
                "safetel_refit_min_ess_bulk",
                "Smallest bulk effective sample size of the last refit",
            )
            .expect("valid metric"),
            reviews: IntCounter::new(
                "safetel_reviews_total",
                "Trips selected for review under the review-budget policy",
            )
            .expect("valid metric"),
            review_results: IntCounterVec::new(
                Opts::new(
                    "safetel_review_results_total",
                    "Reviews requested from the review service, by outcome (answered, timed_out)",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            reviews_pending: IntGauge::new(
                "safetel_reviews_pending",
                "Reviews requested from the review service and not answered yet",
            )
            .expect("valid metric"),
            bins_retired: IntCounter::new(
                "safetel_bins_retired_total",
                "Vehicle bins that left the state with retention (kept in the vehicles' totals)",
            )
            .expect("valid metric"),
            bins_stored: IntCounter::new(
                "safetel_bins_stored_total",
                "Closed vehicle bins that left memory for the state store",
            )
            .expect("valid metric"),
            records_deferred: IntCounter::new(
                "safetel_records_deferred_total",
                "Records a partition task left for the next batch while another's large bin close was committed",
            )
            .expect("valid metric"),
            history_cache_bytes: IntGauge::new(
                "safetel_history_cache_bytes",
                "Bytes of vehicle history (closed bins read from the store) the cache holds",
            )
            .expect("valid metric"),
            history_cache_reads: IntCounterVec::new(
                prometheus::Opts::new(
                    "safetel_history_cache_reads_total",
                    "Reads of vehicle history through the cache, by result (hit, miss)",
                ),
                &["result"],
            )
            .expect("valid metric"),
            history_cache_evictions: IntCounter::new(
                "safetel_history_cache_evictions_total",
                "Vehicle histories the cache let go to stay within state.cache_mb",
            )
            .expect("valid metric"),
            vehicles_departed: IntCounter::new(
                "safetel_vehicles_departed_total",
                "Silent vehicles that left memory (their state stays in the store)",
            )
            .expect("valid metric"),
            vehicles_returned: IntCounter::new(
                "safetel_vehicles_returned_total",
                "Vehicles that had left memory and sent again (read back from the store)",
            )
            .expect("valid metric"),
            refit_converged: IntGauge::new(
                "safetel_refit_converged",
                "1 if the last refit converged and its priors are in use, else 0",
            )
            .expect("valid metric"),
            assigned_partitions: IntGauge::new(
                "safetel_assigned_partitions",
                "Source partitions this process owns in its consumer group",
            )
            .expect("valid metric"),
            partitions_restored: IntCounter::new(
                "safetel_partitions_restored_total",
                "Partitions whose state was restored from their changelog (moved from another process)",
            )
            .expect("valid metric"),
            changelog_records_restored: IntCounter::new(
                "safetel_changelog_records_restored_total",
                "Changelog records read into the state store by partition restores",
            )
            .expect("valid metric"),
            changelog_bytes: IntCounterVec::new(
                Opts::new(
                    "safetel_changelog_bytes_total",
                    "Bytes (keys and values, before compression) state commits sent to the changelog topics, by column family",
                ),
                &["family"],
            )
            .expect("valid metric"),
            facts_rebuilt: IntCounter::new(
                "safetel_facts_rebuilt_total",
                "Facts rebuilt from the input topic for partitions restored from their changelog",
            )
            .expect("valid metric"),
            facts_missing: IntCounter::new(
                "safetel_facts_missing_total",
                "Records whose facts a rebuild needed but the input topic no longer held",
            )
            .expect("valid metric"),
            registry,
        };
        let r = &metrics.registry;
        for collector in [
            Box::new(metrics.records_received.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(accepted_vec),
            Box::new(dlq_vec),
            Box::new(metrics.consumer_lag.clone()),
            Box::new(metrics.commits.clone()),
            Box::new(metrics.commit_failures.clone()),
            Box::new(metrics.group_rejoins.clone()),
            Box::new(metrics.commit_failing_since.clone()),
            Box::new(metrics.commit_duration.clone()),
            Box::new(metrics.processing_latency.clone()),
            Box::new(metrics.alert_latency.clone()),
            Box::new(metrics.vehicles.clone()),
            Box::new(metrics.source_errors.clone()),
            Box::new(metrics.source_disconnected.clone()),
            Box::new(metrics.assigned_partitions.clone()),
            Box::new(metrics.partitions_restored.clone()),
            Box::new(metrics.changelog_records_restored.clone()),
            Box::new(metrics.changelog_bytes.clone()),
            Box::new(metrics.facts_rebuilt.clone()),
            Box::new(metrics.facts_missing.clone()),
            Box::new(metrics.source_outages.clone()),
            Box::new(metrics.source_disconnected_since.clone()),
            Box::new(updates_vec),
            Box::new(closed_vec),
            Box::new(alerts_vec),
            Box::new(metrics.open_episodes.clone()),
            Box::new(metrics.refit_runs.clone()),
            Box::new(metrics.refit_duration.clone()),
            Box::new(metrics.refit_max_rhat.clone()),
            Box::new(metrics.refit_min_ess_bulk.clone()),
            Box::new(metrics.refit_converged.clone()),
            Box::new(metrics.reviews.clone()),
            Box::new(metrics.review_results.clone()),
            Box::new(metrics.reviews_pending.clone()),
            Box::new(metrics.bins_retired.clone()),
            Box::new(metrics.bins_stored.clone()),
            Box::new(metrics.records_deferred.clone()),
            Box::new(metrics.history_cache_bytes.clone()),
            Box::new(metrics.history_cache_reads.clone()),
            Box::new(metrics.history_cache_evictions.clone()),
            Box::new(metrics.vehicles_departed.clone()),
            Box::new(metrics.vehicles_returned.clone()),
            Box::new(metrics.timestamps_replaced.clone()),
            Box::new(metrics.dlq_recent_share.clone()),
            Box::new(metrics.dlq_recent.clone()),
        ] {
            r.register(collector).expect("metric names are unique");
        }
        for reason in Rejection::REASONS {
            metrics.dlq_recent.with_label_values(&[reason]).set(0);
        }
        // Labelled counters exist at 0 from the start, so that a rate over them is defined
        // before the first event.
        for outcome in ["converged", "not_converged"] {
            metrics.refit_runs.with_label_values(&[outcome]);
        }
        for family in crate::store::PARTITIONED
            .iter()
            .chain(&["cohort-reports", "group-view"])
        {
            metrics.changelog_bytes.with_label_values(&[family]);
        }
        for outcome in ["answered", "timed_out"] {
            metrics.review_results.with_label_values(&[outcome]);
        }
        for result in ["hit", "miss"] {
            metrics.history_cache_reads.with_label_values(&[result]);
        }
        // The process's CPU, memory, file descriptors and start time (`process_*`, Linux), and
        // which build this is.
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process metrics register once");
        let build_info = IntGaugeVec::new(
            Opts::new("safetel_build_info", "1, labelled with the build's version"),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        r.register(Box::new(build_info))
            .expect("metric names are unique");
        metrics
    }

    /// Review service answers with this outcome: `answered` or `timed_out`.
    pub fn review_results(&self, outcome: &str) -> IntCounter {
        self.review_results.with_label_values(&[outcome])
    }

    pub fn records_accepted(&self, kind: RecordKind) -> &IntCounter {
        &self.accepted[kind as usize]
    }

    pub fn dlq_records(&self, reason: &str) -> &IntCounter {
        self.dlq
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, c)| c)
            .unwrap_or_else(|| &self.dlq.last().expect("reasons are not empty").1)
    }

    pub fn detector_updates(&self, kind: KeyKind) -> &IntCounter {
        &self.detector_updates[kind as usize]
    }

    pub fn bins_closed(&self, kind: KeyKind) -> &IntCounter {
        &self.bins_closed[kind as usize]
    }

    /// The source lost every broker: counts an outage and notes when it began (once per outage).
    pub fn source_lost_brokers(&self, now_unix_s: f64) -> bool {
        if self.source_disconnected.get() == 1 {
            return false;
        }
        self.source_disconnected.set(1);
        self.source_outages.inc();
        self.source_disconnected_since.set(now_unix_s);
        true
    }

    /// The source reaches a broker again; returns the outage's start if one just ended.
    pub fn source_reconnected(&self) -> Option<f64> {
        if self.source_disconnected.get() == 0 {
            return None;
        }
        let since = self.source_disconnected_since.get();
        self.source_disconnected.set(0);
        self.source_disconnected_since.set(0.0);
        Some(since)
    }

    pub fn alerts(&self, status: AlertStatus) -> &IntCounter {
        &self.alerts[status as usize]
    }

    /// Publishes the dead-letter share of the last records (at a commit point).
    pub fn publish_dead_letter_share(&self, now: DeadLetterShare) {
        self.dlq_recent_share.set(now.share);
        for reason in Rejection::REASONS {
            let count = now
                .reasons
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| *n);
            self.dlq_recent
                .with_label_values(&[reason])
                .set(count as i64);
        }
        *self
            .dead_letter_share
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = now;
    }

    /// The dead-letter share as last published.
    pub fn dead_letter_share(&self) -> DeadLetterShare {
        self.dead_letter_share
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Sum of DLQ records over all reasons.
    pub fn dlq_total(&self) -> u64 {
        self.dlq.iter().map(|(_, c)| c.get()).sum()
    }

    /// Sum of accepted records over all kinds.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.iter().map(IntCounter::get).sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_outage_counts_once_and_ends_with_the_first_sign_of_a_broker() {
        let m = Metrics::new();
        assert_eq!(m.source_reconnected(), None, "connected from the start");
        assert!(m.source_lost_brokers(1000.0));
        assert!(
            !m.source_lost_brokers(1005.0),
            "repeated all-brokers-down errors are one outage"
        );
        assert_eq!(m.source_disconnected.get(), 1);
        assert_eq!(m.source_disconnected_since.get(), 1000.0);
        assert_eq!(m.source_reconnected(), Some(1000.0));
        assert_eq!(m.source_reconnected(), None);
        assert_eq!(
            (
                m.source_disconnected.get(),
                m.source_disconnected_since.get()
            ),
            (0, 0.0)
        );
        assert!(m.source_lost_brokers(2000.0));
        assert_eq!(m.source_outages.get(), 2);
        let text = m.render();
        assert!(text.contains("safetel_source_outages_total 2"), "{text}");
        assert!(text.contains("safetel_source_disconnected 1"));
    }
}
