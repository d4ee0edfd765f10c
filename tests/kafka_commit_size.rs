//! A commit larger than the broker takes in one record: a broker of the test's own
//! (scripts/kafka) with `message.max.bytes` lowered to 400 kB, and one commit of a whole
//! 100k-record stream (its seen ids alone are 16 bytes a record, 400 kB a partition). Before
//! segments were split by bytes, every commit failed with a record too large and was retried;
//! now the stream commits and every vehicle's totals are exact. And where the broker takes
//! less than safetel's largest record, the run fails at once, naming the setting, instead of
//! retrying a commit that cannot succeed.
#![cfg(feature = "kafka-tests")]

mod common;

use std::time::Duration;

use common::*;
use safetel::generator::{Generator, GeneratorConfig};

const TIMEOUT: Duration = Duration::from_secs(240);
/// The broker's limit, and the clients' (below it, as a producer's batches must be).
const BROKER_MAX: &str = "400000";
const CLIENT_MAX: &str = "350000";

/// 600 vehicles x 3 weeks: about 100k records, 25k a partition, in one commit.
fn stream() -> Vec<(String, Vec<u8>)> {
    let fleet = GeneratorConfig {
        seed: 9,
        vehicles: 600,
        days: 21,
        ..Default::default()
    };
    Generator::new(fleet)
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect()
}

#[test]
fn a_commit_of_more_than_the_broker_takes_in_one_record_commits_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let limit = format!("message.max.bytes={BROKER_MAX}");
    let broker = OwnBroker::start(
        &dir.path().join("kafka"),
        &[("SAFETEL_KAFKA_SERVER_PROPERTIES", limit.as_str())],
    );
    let names = Names::unique("commit-size");
    let env = [
        (
            "SAFETEL_KAFKA__BOOTSTRAP_SERVERS",
            broker.bootstrap.as_str(),
        ),
        ("SAFETEL_KAFKA__PROPERTIES__MESSAGE_MAX_BYTES", CLIENT_MAX),
        // One commit for the whole stream: it is read well within 20 s.
        ("SAFETEL_STATE__COMMIT_INTERVAL_MS", "20000"),
    ];
    run_ok(
        safetel(&names, &dir.path().join("unused"), 0)
            .envs(env)
            .args(["topics", "create"]),
    );
    let records = stream();
    assert!(records.len() > 90_000, "{}", records.len());
    let expected = independent_totals(records.iter().map(|(_, b)| b.as_slice()));
    let client = [
        ("bootstrap.servers", broker.bootstrap.as_str()),
        ("message.max.bytes", CLIENT_MAX),
        ("linger.ms", "5"),
    ];
    produce(&client, &names.events, &records);

    let run = Running::start(&names, &dir.path().join("state"), &env);
    run.wait_committed(records.len() as i64, TIMEOUT);
    for (vehicle, totals) in &expected {
        assert_eq!(
            &served_totals(run.port, vehicle),
            totals,
            "vehicle {vehicle}"
        );
    }
    let metrics = http_get(run.port, "/metrics").unwrap().1;
    assert!(
        metric_value(&metrics, "safetel_commits_total").is_some_and(|n| n >= 1.0),
        "committed"
    );
    run.stop();
}

#[test]
fn a_broker_that_refuses_state_records_fails_the_run_at_once_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // Below the 256 KiB segments; the clients keep librdkafka's 1 MB, so the broker refuses.
    let broker = OwnBroker::start(
        &dir.path().join("kafka"),
        &[(
            "SAFETEL_KAFKA_SERVER_PROPERTIES",
            "message.max.bytes=200000",
        )],
    );
    let names = Names::unique("commit-refused");
    let env = [
        (
            "SAFETEL_KAFKA__BOOTSTRAP_SERVERS",
            broker.bootstrap.as_str(),
        ),
        ("SAFETEL_STATE__COMMIT_INTERVAL_MS", "20000"),
    ];
    run_ok(
        safetel(&names, &dir.path().join("unused"), 0)
            .envs(env)
            .args(["topics", "create"]),
    );
    let records = stream();
    let client = [
        ("bootstrap.servers", broker.bootstrap.as_str()),
        ("message.max.bytes", "150000"),
        ("linger.ms", "5"),
    ];
    produce(&client, &names.events, &records);

    let started = std::time::Instant::now();
    let out = safetel(&names, &dir.path().join("state"), free_port())
        .envs(env)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = out.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run must fail: {stderr}");
    // The first commit is due after 20 s; the 300 s deadline for outages does not apply.
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "failed after {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("too large") && stderr.contains("message.max.bytes"),
        "{stderr}"
    );
}
