//! Broker faults: a broker of the test's own (scripts/kafka, separate from the shared one) is
//! stopped for tens of seconds in the middle of a stream and restarted on the same port and
//! storage. `safetel run` keeps running through the outage, its health endpoint and metrics show
//! it while it lasts, and afterwards it consumes the rest: every vehicle's totals equal the test's
//! own count, and the alerts on the regressions topic are those of the same fleet run in process.
#![cfg(feature = "kafka-tests")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::ClientConfig;
use safetel::generator::{Generator, GeneratorConfig};

const TIMEOUT: Duration = Duration::from_secs(300);
/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(25);

fn metric(port: u16, series: &str) -> Option<f64> {
    metric_value(&http_get(port, "/metrics")?.1, series)
}

/// The stream's records to the events topic of the test's own broker.
fn send(bootstrap: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let client = [
        ("bootstrap.servers", bootstrap),
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
    ];
    produce(&client, topic, records);
}

#[test]
fn a_broker_outage_mid_stream_is_reported_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = OwnBroker::start(&dir.path().join("kafka"), &[]);
    let names = Names::unique("outage");
    let own_broker = [(
        "SAFETEL_KAFKA__BOOTSTRAP_SERVERS",
        broker.bootstrap.as_str(),
    )];
    run_ok(
        safetel(&names, &dir.path().join("unused"), 0)
            .envs(own_broker)
            .args(["topics", "create"]),
    );
    let fleet = GeneratorConfig {
        seed: 5,
        vehicles: 300,
        days: 56,
        ..Default::default()
    };
    let records: Vec<(String, Vec<u8>)> = Generator::new(fleet.clone())
        .unwrap()
        .map(|r| (r.key, r.bytes))
        .collect();
    let expected = independent_totals(records.iter().map(|(_, b)| b.as_slice()));
    let half = records.len() / 2;

    send(&broker.bootstrap, &names.events, &records[..half]);
    let mut run = Running::start(&names, &dir.path().join("state"), &own_broker);
    run.wait_committed(half as i64, TIMEOUT);
    assert_eq!(metric(run.port, "safetel_source_disconnected"), Some(0.0));

    broker.stop_keeping_storage();
    let down = Instant::now();
    let health = wait_for(
        "health to report the outage",
        Duration::from_secs(60),
        || {
            let (code, body) = http_get(run.port, "/health")?;
            (code == 503).then_some(body)
        },
    );
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert!(
        health["broker_unreachable_since_unix_s"].as_f64().unwrap() > 0.0,
        "{health}"
    );
    assert_eq!(metric(run.port, "safetel_source_disconnected"), Some(1.0));
    assert_eq!(metric(run.port, "safetel_source_outages_total"), Some(1.0));
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "run keeps running without a broker"
    );
    assert_eq!(http_get(run.port, "/health").unwrap().0, 503, "still down");

    broker.restart();
    wait_for("health after the outage", TIMEOUT, || {
        (http_get(run.port, "/health")?.0 == 200).then_some(())
    });
    assert_eq!(metric(run.port, "safetel_source_disconnected"), Some(0.0));
    assert_eq!(
        metric(run.port, "safetel_source_disconnected_since_seconds"),
        Some(0.0)
    );
    assert_eq!(metric(run.port, "safetel_source_outages_total"), Some(1.0));

    send(&broker.bootstrap, &names.events, &records[half..]);
    run.wait_committed(records.len() as i64, TIMEOUT);
    for (vehicle, totals) in &expected {
        assert_eq!(
            &served_totals(run.port, vehicle),
            totals,
            "vehicle {vehicle}"
        );
    }
    // Alerts: the same ids as the fleet run in process (a duplicate may repeat an id).
    let schema =
        apache_avro::Schema::parse_str(include_str!("../schemas/regression_alert.avsc")).unwrap();
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", format!("{}-reader", names.group))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::subscribe(&consumer, &[&names.regressions]).unwrap();
    let published: BTreeSet<String> = read_until_quiet(&consumer, Duration::from_secs(5), TIMEOUT)
        .iter()
        .map(|(_, payload)| {
            decode_alert(payload, &schema)["alert_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected_ids: BTreeSet<String> = in_process_alerts(fleet)
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!expected_ids.is_empty());
    assert_eq!(published, expected_ids);
    run.stop();
    drop(broker);
}
