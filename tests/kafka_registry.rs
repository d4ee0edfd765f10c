//! A schema registry in the loop (Apicurio's Confluent API, `scripts/registry`), with clients
//! nobody at safetel wrote: confluent-kafka's `AvroSerializer` produces the telemetry (ids the
//! registry gives, with another team's schemas registered first; an evolved, compatible version
//! from the middle of the stream on; some records with a schema safetel cannot read, and some
//! with an id nobody registered), `safetel run` with `[schema_registry]` reads it, and
//! confluent-kafka's `AvroDeserializer` reads the alerts safetel published.
#![cfg(all(feature = "kafka-tests", feature = "python-tests"))]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(300);
const INCOMPATIBLE: usize = 25;
const UNKNOWN: usize = 7;

fn python() -> String {
    std::env::var("SAFETEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `tests/registry/clients.py` (the venv `scripts/setup --with-python` makes has its
/// packages); its standard output.
fn clients(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/registry/clients.py");
    run_ok(std::process::Command::new(python()).arg(script).args(args))
}

#[test]
fn registry_framed_telemetry_is_counted_evolution_flows_and_alerts_read_back() {
    let test_registry = TestRegistry::from_env();
    let registry = test_registry.url.clone();
    let user_info = test_registry.user_info.as_str();
    let dir = tempfile::tempdir().unwrap();
    let names = Names::unique("registry");
    let state = dir.path().join("state");
    let env = test_registry.env();
    run_ok(
        safetel(&names, &dir.path().join("unused"), 0)
            .args(["topics", "create"])
            .envs(env),
    );

    // Another team's schemas first: safetel's ids are not the fixed 1-5.
    let client = test_registry.client();
    for i in 0..6 {
        let schema = format!(
            r#"{{"type":"record","name":"Other{i}","namespace":"other.team","fields":[{{"name":"n{i}","type":"long"}}]}}"#
        );
        client
            .register(&format!("{}-other-{i}-value", names.group), &schema)
            .unwrap();
    }

    // The fleet (with injected regressions) as an Avro container file, sent by the serializer.
    let fleet = dir.path().join("fleet.avro");
    run_ok(
        safetel(&names, &dir.path().join("unused"), 0)
            .args(["generate", "--output"])
            .arg(&fleet)
            .arg("--truth")
            .arg(dir.path().join("truth.json"))
            .args(["--seed", "21", "--vehicles", "300", "--days", "56"]),
    );
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("truth.json")).unwrap()).unwrap();
    let records = truth["records"].as_i64().unwrap();
    let evolve_from = (records * 3 / 5).to_string();
    let sent: serde_json::Value = serde_json::from_str(&clients(&[
        "produce",
        &bootstrap(),
        &names.events,
        &registry,
        user_info,
        fleet.to_str().unwrap(),
        &evolve_from,
        &INCOMPATIBLE.to_string(),
        &UNKNOWN.to_string(),
    ]))
    .unwrap();
    assert_eq!(sent["sent"].as_i64(), Some(records));
    let ids: Vec<i64> = sent["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "two versions of the events subject: {sent}");
    assert!(
        ids.iter().all(|id| *id > 5),
        "registry ids, not the fixed ones: {ids:?}"
    );

    let total = records + (INCOMPATIBLE + UNKNOWN) as i64;
    let run = Running::start(&names, &state, &env);
    run.wait_committed(total, TIMEOUT);
    let metrics = http_get(run.port, "/metrics").unwrap().1;
    let metric = |name: &str| metric_value(&metrics, name).unwrap_or(-1.0);
    let accepted: f64 = ["trip", "safety_event", "mode_transition"]
        .iter()
        .map(|kind| {
            metric(&format!(
                "safetel_records_consumed_total{{type=\"{kind}\"}}"
            ))
        })
        .sum();
    let dlq: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("safetel_dlq_records_total")
                || l.starts_with("safetel_records_consumed_total")
        })
        .collect();
    assert_eq!(
        accepted, records as f64,
        "every registry-framed record counted: {dlq:#?}"
    );
    assert_eq!(
        metric("safetel_dlq_records_total{reason=\"incompatible_schema\"}"),
        INCOMPATIBLE as f64
    );
    assert_eq!(
        metric("safetel_dlq_records_total{reason=\"schema\"}"),
        UNKNOWN as f64
    );
    let fleet_api = get_json(run.port, "/api/fleet").unwrap();
    assert_eq!(fleet_api["vehicles"].as_i64(), Some(300), "{fleet_api}");
    std::thread::sleep(Duration::from_secs(2));
    run.stop();

    // The alerts, as AvroDeserializer reads them, are those safetel published.
    let store = safetel::store::Store::open(&state).unwrap();
    let published: BTreeMap<String, safetel::model::RegressionAlert> = store
        .alerts()
        .unwrap()
        .into_iter()
        .map(|a| (a.alert_id.clone(), a))
        .collect();
    assert!(
        published.len() >= 3,
        "alerts to compare: {}",
        published.len()
    );
    let read: Vec<serde_json::Value> = clients(&[
        "consume",
        &bootstrap(),
        &names.regressions,
        &registry,
        user_info,
        &published.len().to_string(),
    ])
    .lines()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect();
    assert_eq!(read.len(), published.len());
    for alert in &read {
        let id = alert["alert_id"].as_str().unwrap();
        let ours = published
            .get(id)
            .unwrap_or_else(|| panic!("{id} was not published"));
        assert_eq!(alert["key"].as_str(), Some(ours.key.as_str()), "{id}");
        assert_eq!(
            alert["p_regression"].as_f64(),
            Some(ours.p_regression),
            "{id}"
        );
        assert_eq!(alert["hr_median"].as_f64(), Some(ours.hr_median), "{id}");
        assert_eq!(alert["hr_low"].as_f64(), Some(ours.hr_low), "{id}");
        assert_eq!(alert["hr_high"].as_f64(), Some(ours.hr_high), "{id}");
    }
}

#[test]
fn a_registry_that_refuses_the_credentials_stops_safetel_with_a_clear_error() {
    let test_registry = TestRegistry::from_env();
    let names = Names::unique("registry-auth");
    let dir = tempfile::tempdir().unwrap();
    run_ok(safetel(&names, &dir.path().join("unused"), 0).args(["topics", "create"]));
    let (user, _) = test_registry.user_info.split_once(':').unwrap();
    let wrong = format!("{user}:not-the-password");
    for (label, user_info) in [("wrong password", Some(wrong.as_str())), ("none", None)] {
        let mut command = safetel(&names, &dir.path().join("state"), 0);
        command
            .args(["generate", "--kafka", "--vehicles", "2", "--days", "1"])
            .env("SAFETEL_SCHEMA_REGISTRY__URL", &test_registry.url);
        if let Some(user_info) = user_info {
            command.env("SAFETEL_SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO", user_info);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{label}: {stderr}");
        assert!(
            stderr.contains("schema registry") && stderr.contains("answered 401"),
            "{label}: {stderr}"
        );
        assert!(
            !stderr.contains("not-the-password"),
            "{label}: the password is not shown: {stderr}"
        );
    }
    // Nothing reached the topic: the records would have been framed with ids nobody gave.
    let records = read_until_quiet(
        &topic_reader(&names, &names.events),
        Duration::from_secs(2),
        Duration::from_secs(10),
    );
    assert!(records.is_empty(), "{} records sent", records.len());
}
