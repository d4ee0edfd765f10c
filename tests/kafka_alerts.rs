//! Regression alerts through a real Apache Kafka broker: a generated fleet with injected
//! regressions goes to the events topic, `safetel run` publishes alerts to the regressions
//! topic, and the test reads them back with `apache-avro` and the committed schema (not
//! safetel's code), compares them with the same fleet run in process, and scores them with
//! `safetel evaluate` against its own count.
#![cfg(feature = "kafka-tests")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use safetel::generator::GeneratorConfig;

const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn alerts_on_the_regressions_topic_match_an_in_process_run_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("alerts");
    let out = run_ok(safetel(&names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    assert!(
        out.contains(&format!("{}: created", names.regressions)),
        "{out}"
    );
    // The default fleet (vehicle faults and a firmware rollout on day 28), 56 days.
    let fleet = GeneratorConfig {
        seed: 5,
        vehicles: 300,
        days: 56,
        ..Default::default()
    };
    let truth_path = dir.path().join("truth.json");
    run_ok(safetel(&names, &dir.path().join("unused"), 0).args([
        "generate",
        "--kafka",
        "--seed",
        "5",
        "--vehicles",
        "300",
        "--days",
        "56",
        "--truth",
        truth_path.to_str().unwrap(),
    ]));
    let truth: safetel::generator::GroundTruth =
        serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    let expected = in_process_alerts(fleet);
    assert!(
        expected.iter().any(|a| a["status"] == "OPENED"),
        "the fleet raises alerts in process"
    );

    let run = Running::start(&names, &dir.path().join("state"), &[]);
    run.wait_committed(truth.records as i64, TIMEOUT);
    // The API shows each vehicle's detectors, and the episode its last alert left open, if any:
    // for every vehicle that alerted and a fixed sample of others.
    let mut last_alert: BTreeMap<(String, String), &serde_json::Value> = BTreeMap::new();
    for alert in expected.iter().filter(|a| a["key_kind"] == "VEHICLE") {
        let key = (
            alert["key"].as_str().unwrap().to_string(),
            alert["hazard_class"].as_str().unwrap().to_string(),
        );
        last_alert.insert(key, alert);
    }
    let mut checked: Vec<(String, String)> = last_alert.keys().cloned().collect();
    for v in ["veh-00000", "veh-00042", "veh-00299"] {
        for class in ["critical", "disengagement"] {
            checked.push((v.to_string(), class.to_string()));
        }
    }
    for (vehicle, class) in &checked {
        let served = get_json(run.port, &format!("/api/vehicles/{vehicle}")).unwrap();
        let detector = &served["detectors"][class.as_str()];
        assert!(
            detector["last_bin"]["p_regression"].is_number(),
            "{vehicle} {class}: {detector}"
        );
        assert!(
            detector["own_history"]["in_baseline"]["exposure"].is_number()
                && detector["last_bin"]["expected"].is_number(),
            "{vehicle} {class}: {detector}"
        );
        let open = &detector["open_episode"];
        match last_alert.get(&(vehicle.clone(), class.clone())) {
            Some(alert) if alert["status"] != "RESOLVED" => {
                assert_eq!(
                    open["onset_ms"], alert["onset_estimate"],
                    "{vehicle} {class}"
                )
            }
            _ => assert!(
                open.is_null(),
                "{vehicle} {class}: no open alert, yet {open}"
            ),
        }
    }
    // Cohort alerts come from the cohort stage, which reads the repartition topic after the
    // source partitions commit: wait for the count to reach the in-process one, then hold it.
    let opened = expected.iter().filter(|a| a["status"] == "OPENED").count() as f64;
    let series = "safetel_alerts_total{status=\"OPENED\"}";
    let metrics = wait_for("the OPENED alerts counted", TIMEOUT, || {
        let metrics = http_get(run.port, "/metrics")?.1;
        let counted = metric_value(&metrics, series);
        assert!(
            counted.unwrap_or(0.0) <= opened,
            "{counted:?} OPENED alerts counted, {opened} in process"
        );
        (counted == Some(opened)).then_some(metrics)
    });
    assert!(metrics.contains("safetel_detector_bin_updates_total{key_kind=\"cohort\"}"));
    run.stop();

    let schema =
        apache_avro::Schema::parse_str(include_str!("../schemas/regression_alert.avsc")).unwrap();
    let consumer = topic_reader(&names, &names.regressions);
    // `run` flushed every alert before it stopped: read until the topic stays quiet for 10 s.
    let mut published: Vec<serde_json::Value> = Vec::new();
    for (key, payload) in read_until_quiet(&consumer, Duration::from_secs(10), TIMEOUT) {
        let alert = decode_alert(&payload, &schema);
        assert_eq!(
            Some(String::from_utf8_lossy(&key).to_string()),
            alert["alert_id"].as_str().map(str::to_string),
            "keyed by alert id"
        );
        published.push(alert);
    }
    // One run, no crash: each alert exactly once, and the same alerts as in process (detection
    // does not depend on partitioning or on how records interleave across partitions).
    let by_id = |alerts: &[serde_json::Value]| -> BTreeMap<String, serde_json::Value> {
        alerts
            .iter()
            .map(|a| (a["alert_id"].as_str().unwrap().to_string(), a.clone()))
            .collect()
    };
    assert_eq!(
        by_id(&published).len(),
        published.len(),
        "alert ids are unique"
    );
    let (published_ids, expected_ids) = (by_id(&published), by_id(&expected));
    let missing: Vec<&String> = expected_ids
        .keys()
        .filter(|k| !published_ids.contains_key(*k))
        .collect();
    let extra: Vec<&String> = published_ids
        .keys()
        .filter(|k| !expected_ids.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(published_ids, expected_ids);

    // Score the decoded alerts with `safetel evaluate`, and check it against the test's own count.
    let alerts_path = dir.path().join("alerts.jsonl");
    let lines: String = published.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(&alerts_path, lines).unwrap();
    let report = run_ok(safetel(&names, &dir.path().join("unused"), 0).args([
        "evaluate",
        "--truth",
        truth_path.to_str().unwrap(),
        "--alerts",
        alerts_path.to_str().unwrap(),
        "--horizon-days",
        "30",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let opened: Vec<&serde_json::Value> = published
        .iter()
        .filter(|a| a["status"] == "OPENED")
        .collect();
    let day = 86_400_000i64;
    let detected = truth
        .regressions
        .iter()
        .filter(|r| {
            opened.iter().any(|a| {
                a["key"] == r.key.as_str()
                    && a["key_kind"] == r.key_kind.as_str()
                    && a["hazard_class"] == r.hazard_class.name()
                    && (r.onset_ms..=r.onset_ms + 30 * day)
                        .contains(&a["detected_at"].as_i64().unwrap())
            })
        })
        .count();
    assert!(
        detected >= 1,
        "the firmware rollout (HR 2.5 over ~90 vehicles) is detected"
    );
    assert_eq!(report["detected"], detected);
    assert_eq!(report["regressions"], truth.regressions.len());
    assert_eq!(report["alerts_opened"], opened.len());
    let sensitivity = detected as f64 / truth.regressions.len() as f64;
    assert!((report["sensitivity"].as_f64().unwrap() - sensitivity).abs() < 1e-12);
    for name in [
        "false_alarms_per_1000_vehicle_months",
        "precision",
        "mttd_days_mean",
        "mttd_days_median",
    ] {
        assert!(report[name].is_number(), "{name} reported: {report}");
    }
}
