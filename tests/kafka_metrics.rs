//! Every stage's Prometheus metric after a short `safetel run` against a real broker, each with
//! a value the test works out on its own: records consumed by type and dead-lettered by reason
//! (from the generator's own record of what it sent and disturbed), consumer lag (0 once all is
//! committed), bins closed (from each vehicle's detectors in the API), alerts by status (read back
//! from the regressions topic with apache-avro), commits and their durations, and the refit's
//! duration, R-hat and ESS (equal to the model run it recorded, served by /api/diagnostics),
//! and the changelog bytes by column family (the changelog topics read back).
//! Also: `run` serves the dashboard pages from the same state.
#![cfg(feature = "kafka-tests")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use safetel::generator::{Fault, Generator, GeneratorConfig};

const TIMEOUT: Duration = Duration::from_secs(300);
const DAY_MS: i64 = 86_400_000;

fn expect(metrics: &str, series: &str) -> f64 {
    metric_value(metrics, series).unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

#[test]
fn every_stage_metric_is_exposed_with_the_value_it_should_have() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("metrics");
    run_ok(safetel(&names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    let (seed, vehicles, days) = (5, 300, 56);
    let faults = [
        ("--out-of-order", 0.01),
        ("--late", 0.002),
        ("--duplicate", 0.003),
        ("--corrupt", 0.002),
    ];
    let truth_path = dir.path().join("truth.json");
    let mut generate = safetel(&names, &dir.path().join("unused"), 0);
    generate.args(["generate", "--kafka", "--seed", &seed.to_string()]);
    generate.args([
        "--vehicles",
        &vehicles.to_string(),
        "--days",
        &days.to_string(),
    ]);
    for (flag, rate) in faults {
        generate.args([flag, &rate.to_string()]);
    }
    run_ok(generate.args(["--truth", truth_path.to_str().unwrap()]));
    let truth: safetel::generator::GroundTruth =
        serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    // The same stream regenerated here: what must be counted, by type.
    let config = GeneratorConfig {
        seed,
        vehicles,
        days,
        faults: safetel::generator::FaultConfig {
            out_of_order: 0.01,
            late: 0.002,
            duplicate: 0.003,
            corrupt: 0.002,
        },
        ..Default::default()
    };
    let records: Vec<_> = Generator::new(config).unwrap().collect();
    assert_eq!(records.len() as u64, truth.records);
    let totals = independent_totals(
        records
            .iter()
            .filter(|r| matches!(r.fault, None | Some(Fault::OutOfOrder)))
            .map(|r| r.bytes.as_slice()),
    );
    let trips: u64 = totals.values().map(|t| t.trips).sum();
    let safety_events: u64 = totals.values().map(|t| t.safety_events).sum();

    let warehouse = dir.path().join("warehouse");
    let run = Running::start(
        &names,
        &dir.path().join("state"),
        &[
            ("SAFETEL_REFIT__INTERVAL_S", "20"),
            ("SAFETEL_REFIT__WAREHOUSE_DIR", warehouse.to_str().unwrap()),
        ],
    );
    run.wait_committed(truth.records as i64, TIMEOUT);
    // The first refit starts 20 s after start-up; wait for it to be recorded.
    wait_for("a recorded refit", TIMEOUT, || {
        let m = http_get(run.port, "/metrics")?.1;
        (metric_value(&m, "safetel_refit_duration_seconds_count")? >= 1.0).then_some(())
    });
    // Metrics and the model run it describes, read between two reads of the same run id (a
    // later refit may land meanwhile: then read again).
    let (metrics, diagnostics) = wait_for("a consistent read", TIMEOUT, || {
        let before = get_json(run.port, "/api/diagnostics")?;
        let metrics = http_get(run.port, "/metrics")?.1;
        let after = get_json(run.port, "/api/diagnostics")?;
        let refits = metric_value(&metrics, "safetel_refit_duration_seconds_count")?;
        let runs = metric_value(&metrics, "safetel_refit_runs_total{outcome=\"converged\"}")
            .unwrap_or(0.0)
            + metric_value(
                &metrics,
                "safetel_refit_runs_total{outcome=\"not_converged\"}",
            )
            .unwrap_or(0.0);
        let same_run = before["run_id"] == after["run_id"]
            && metric_value(&metrics, "safetel_refit_max_rhat")
                == after
                    .pointer("/diagnostics/max_rhat")
                    .and_then(|v| v.as_f64());
        (same_run && refits == runs).then_some((metrics, after))
    });

    // Consumed, by type, and dead-lettered, by reason.
    assert_eq!(
        expect(&metrics, "safetel_records_consumed_total{type=\"trip\"}"),
        trips as f64
    );
    assert_eq!(
        expect(
            &metrics,
            "safetel_records_consumed_total{type=\"safety_event\"}"
        ),
        safety_events as f64
    );
    assert!(!truth.faults.expected_dlq.is_empty());
    for (reason, count) in &truth.faults.expected_dlq {
        assert_eq!(
            expect(
                &metrics,
                &format!("safetel_dlq_records_total{{reason=\"{reason}\"}}")
            ),
            *count as f64,
            "{reason}"
        );
    }
    assert_eq!(
        expect(&metrics, "safetel_records_received_total"),
        truth.records as f64
    );
    // Lag: one gauge per partition, 0 with everything committed.
    let lags: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("safetel_consumer_lag_records{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(!lags.is_empty(), "a lag gauge per partition");
    // Labelled as a Kafka operator expects: topic, consumer group, partition.
    let labelled = |l: &&str| {
        l.starts_with("safetel_consumer_lag_records{")
            && l.contains(&format!("topic=\"{}\"", names.events))
            && l.contains(&format!("group=\"{}\"", names.group))
            && l.contains("partition=\"0\"")
    };
    assert!(
        metrics.lines().any(|l| labelled(&l)),
        "lag by topic, group and partition"
    );
    assert!(lags.iter().all(|lag| *lag == 0.0), "{lags:?}");

    // Bins closed: each vehicle's detectors have been fed from its first bin to next_bin_ms.
    let mut closed = 0i64;
    for vehicle in totals.keys() {
        let served = get_json(run.port, &format!("/api/vehicles/{vehicle}")).unwrap();
        let first = served["bins"][0]["start_ms"].as_i64().unwrap();
        let next = served["detectors"]["critical"]["next_bin_ms"]
            .as_i64()
            .unwrap_or(first);
        closed += (next - first) / DAY_MS;
    }
    assert!(closed > 0);
    assert_eq!(
        expect(&metrics, "safetel_bins_closed_total{key_kind=\"vehicle\"}"),
        closed as f64
    );
    assert_eq!(
        expect(
            &metrics,
            "safetel_detector_bin_updates_total{key_kind=\"vehicle\"}"
        ),
        2.0 * closed as f64,
        "one update per hazard class and bin"
    );
    assert!(expect(&metrics, "safetel_bins_closed_total{key_kind=\"cohort\"}") > 0.0);

    // Alerts by status, as published on the regressions topic.
    let schema =
        apache_avro::Schema::parse_str(include_str!("../schemas/regression_alert.avsc")).unwrap();
    let consumer = topic_reader(&names, &names.regressions);
    let mut published: BTreeMap<String, f64> = BTreeMap::new();
    for (_, payload) in read_until_quiet(&consumer, Duration::from_secs(5), TIMEOUT) {
        let alert = decode_alert(&payload, &schema);
        *published
            .entry(alert["status"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    assert!(
        published.get("OPENED").is_some_and(|n| *n > 0.0),
        "{published:?}"
    );
    for status in ["OPENED", "UPDATED", "RESOLVED"] {
        assert_eq!(
            expect(
                &metrics,
                &format!("safetel_alerts_total{{status=\"{status}\"}}")
            ),
            published.get(status).copied().unwrap_or(0.0),
            "{status}"
        );
    }

    // Alert latency: one observation per alert published.
    assert_eq!(
        expect(&metrics, "safetel_alert_latency_seconds_count"),
        published.values().sum::<f64>()
    );

    // Commits and their durations: one observation per commit.
    let commits = expect(&metrics, "safetel_commits_total");
    assert!(commits >= 1.0);
    assert_eq!(
        expect(&metrics, "safetel_commit_duration_seconds_count"),
        commits
    );
    assert!(expect(&metrics, "safetel_commit_duration_seconds_sum") > 0.0);

    // Changelog bytes by column family: the changelog topics, read back (committed
    // transactions only: librdkafka's default), hold what the metric counted (keys and values
    // as sent, before compression), between a reading of it before and one after.
    let sent = |family: &str| {
        let metrics = http_get(run.port, "/metrics").unwrap().1;
        metric_value(
            &metrics,
            &format!("safetel_changelog_bytes_total{{family=\"{family}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let before: BTreeMap<&str, f64> = safetel::store::PARTITIONED
        .iter()
        .map(|family| (*family, sent(family)))
        .collect();
    let mut on_topics: BTreeMap<&str, f64> = BTreeMap::new();
    for topic in ["state-changelog", "cohort-changelog"] {
        let reader = topic_reader(&names, &format!("{}.{topic}", names.group));
        for (key, value) in read_until_quiet(&reader, Duration::from_secs(3), TIMEOUT) {
            let family = safetel::store::PARTITIONED[usize::from(key[0])];
            *on_topics.entry(family).or_default() += (key.len() + value.len()) as f64;
        }
    }
    for family in [
        "vehicles",
        "bins",
        "series",
        "timeline",
        "positions",
        "cohorts",
    ] {
        assert!(
            on_topics.get(family).is_some_and(|b| *b > 0.0),
            "{family}: {on_topics:?}"
        );
    }
    for (family, bytes) in &on_topics {
        let after = sent(family);
        assert!(
            before[family] <= *bytes && *bytes <= after,
            "{family}: {} <= {bytes} <= {after}",
            before[family]
        );
    }

    // The refit: its duration, R-hat and ESS are those of the model run it recorded.
    assert_eq!(diagnostics["available"], true);
    let d = &diagnostics["diagnostics"];
    assert_eq!(
        expect(&metrics, "safetel_refit_max_rhat"),
        d["max_rhat"].as_f64().unwrap()
    );
    assert_eq!(
        expect(&metrics, "safetel_refit_min_ess_bulk"),
        d["min_ess_bulk"].as_f64().unwrap()
    );
    assert!(
        expect(&metrics, "safetel_refit_duration_seconds_sum")
            >= diagnostics["total_s"].as_f64().unwrap() - 1e-9
    );
    assert_eq!(
        expect(&metrics, "safetel_refit_converged"),
        if diagnostics["converged"] == true {
            1.0
        } else {
            0.0
        }
    );
    // `run` serves the dashboard pages too, from the same state.
    for page in [
        "/",
        "/regressions",
        "/rare-events",
        "/vehicles",
        "/diagnostics",
    ] {
        let (code, body) = http_get(run.port, page).unwrap();
        assert_eq!(code, 200, "{page}");
        assert!(body.contains(r#"<svg class="chart""#), "{page} has charts");
    }
    let summary = get_json(run.port, "/api/summary").unwrap();
    assert_eq!(summary["fleet"]["totals"]["trips"], trips);
    assert_eq!(
        summary["regressions"]["alerts"].as_f64().unwrap(),
        published.values().sum::<f64>()
    );
    run.stop();
}
